"""Small pyhf workspaces for tests and benchmarks."""

from __future__ import annotations


def tiny_workspace(signal: float = 5.0, bkg: float = 50.0, obs: float = 52.0) -> dict:
    """A one-bin counting experiment (a fit takes milliseconds)."""
    return {
        "version": "1.0.0",
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {
                        "name": "signal",
                        "data": [signal],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [bkg],
                        "modifiers": [{"name": "uncorr_bkg", "type": "shapesys", "data": [7.0]}],
                    },
                ],
            }
        ],
        "observations": [{"name": "sr", "data": [obs]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    }
