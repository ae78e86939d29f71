"""Small HistFactory workspaces for the batched-engine tests: fixed ones and a hypothesis
strategy for random ones (every modifier type the batched engine supports)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def _measurement(poi: str = "mu") -> list[dict[str, Any]]:
    return [
        {
            "name": "meas",
            "config": {
                "poi": poi,
                "parameters": [
                    {
                        "name": "lumi",
                        "auxdata": [1.0],
                        "sigmas": [0.02],
                        "bounds": [[0.8, 1.2]],
                        "inits": [1.0],
                    }
                ],
            },
        }
    ]


def simple_workspace() -> dict[str, Any]:
    """Three channels, every supported modifier type (a shapefactor in its own region)."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [5.0, 8.0],
                        "modifiers": [
                            {"name": "mu", "type": "normfactor", "data": None},
                            {"name": "lumi", "type": "lumi", "data": None},
                            {
                                "name": "sig_theory",
                                "type": "normsys",
                                "data": {"hi": 1.1, "lo": 0.85},
                            },
                        ],
                    },
                    {
                        "name": "bkg",
                        "data": [50.0, 30.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [55.0, 31.0], "lo_data": [46.0, 28.5]},
                            },
                            {"name": "jes", "type": "normsys", "data": {"hi": 1.05, "lo": 0.97}},
                            {"name": "stat_SR", "type": "staterror", "data": [2.0, 1.5]},
                            {"name": "bkg_norm", "type": "normfactor", "data": None},
                        ],
                    },
                    {
                        "name": "other",
                        "data": [10.0, 6.0],
                        "modifiers": [
                            {"name": "stat_SR", "type": "staterror", "data": [1.0, 0.8]},
                            {"name": "other_unc", "type": "shapesys", "data": [2.0, 1.0]},
                        ],
                    },
                ],
            },
            {
                "name": "CR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [200.0, 150.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "bkg_norm", "type": "normfactor", "data": None},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [210.0, 152.0], "lo_data": [192.0, 149.0]},
                            },
                        ],
                    }
                ],
            },
            {
                "name": "QCD",
                "samples": [
                    {
                        "name": "qcd",
                        "data": [40.0, 25.0],
                        "modifiers": [
                            {"name": "qcd_shape", "type": "shapefactor", "data": None},
                            {"name": "lumi", "type": "lumi", "data": None},
                        ],
                    }
                ],
            },
        ],
        "observations": [
            {"name": "SR", "data": [62.0, 41.0]},
            {"name": "CR", "data": [205.0, 148.0]},
            {"name": "QCD", "data": [44.0, 21.0]},
        ],
        "measurements": _measurement(),
        "version": "1.0.0",
    }


@st.composite
def random_workspaces(draw) -> dict[str, Any]:
    """A random, well-posed workspace: signal with a normfactor POI, backgrounds with
    normsys, histosys, staterror, shapesys and lumi, observations near the expectation."""
    n_channels = draw(st.integers(1, 2))
    rel = st.floats(0.02, 0.25)
    channels, observations = [], []
    for ci in range(n_channels):
        nbins = draw(st.integers(1, 3))
        sig = [draw(st.floats(0.5, 15.0)) for _ in range(nbins)]
        bkg = [draw(st.floats(10.0, 120.0)) for _ in range(nbins)]
        other = [draw(st.floats(2.0, 30.0)) for _ in range(nbins)]
        up = [b * (1 + draw(rel)) for b in bkg]
        # the down variation may go either way (one-sided systematics exist)
        dn = [b * (1 - draw(st.floats(-0.05, 0.25))) for b in bkg]
        signal_mods = [
            {"name": "mu", "type": "normfactor", "data": None},
            {"name": "lumi", "type": "lumi", "data": None},
        ]
        if draw(st.booleans()):
            hi = 1 + draw(rel)
            signal_mods.append(
                {"name": "sig_xs", "type": "normsys", "data": {"hi": hi, "lo": 1 - draw(rel)}}
            )
        bkg_mods = [
            {"name": "lumi", "type": "lumi", "data": None},
            {"name": "shape", "type": "histosys", "data": {"hi_data": up, "lo_data": dn}},
            {
                "name": "norm",
                "type": "normsys",
                "data": {"hi": 1 + draw(rel), "lo": 1 - draw(rel)},
            },
            {
                "name": f"stat_{ci}",
                "type": "staterror",
                "data": [b * draw(st.floats(0.01, 0.15)) for b in bkg],
            },
        ]
        other_mods = [
            {"name": f"stat_{ci}", "type": "staterror", "data": [o * 0.1 for o in other]},
            {
                "name": f"other_{ci}",
                "type": "shapesys",
                "data": [o * draw(st.floats(0.05, 0.4)) for o in other],
            },
        ]
        channels.append(
            {
                "name": f"ch{ci}",
                "samples": [
                    {"name": "signal", "data": sig, "modifiers": signal_mods},
                    {"name": "bkg", "data": bkg, "modifiers": bkg_mods},
                    {"name": "other", "data": other, "modifiers": other_mods},
                ],
            }
        )
        mu_true = draw(st.sampled_from([0.0, 0.5, 1.0]))
        obs = [
            float(max(0, round((b + o + mu_true * s) * draw(st.floats(0.8, 1.2)))))
            for s, b, o in zip(sig, bkg, other, strict=True)
        ]
        observations.append({"name": f"ch{ci}", "data": obs})
    return {
        "channels": channels,
        "observations": observations,
        "measurements": _measurement(),
        "version": "1.0.0",
    }
