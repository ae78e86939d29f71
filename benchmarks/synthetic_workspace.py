"""A synthetic HistFactory workspace and patchset shaped like a large published likelihood.

Issue 16 measured the batched engine on a published ATLAS likelihood with 8 channels,
10 samples, 14 bins and 126 parameters (125 signal patches) that is kept out of the repository
so that the engine is not tuned to it. This module generates a workspace of that shape, with
the modifier mix of a real analysis, deterministically from a seed, so anyone can reproduce
the benchmark:

- 8 channels with 1-3 bins each, 14 bins in all; 9 background samples per channel plus the
  signal sample that every patch adds (10 samples);
- ``normfactor``: the POI ``mu_SIG`` on the signal and three background normalisations
  (``mu_ttbar``, ``mu_W``, ``mu_Z``) shared by all channels;
- ``lumi`` on the simulated samples (not on the data-driven ``fakes`` and ``QCD``);
- ``staterror`` on every background sample, one parameter per bin;
- ``shapesys`` on the data-driven ``fakes`` sample;
- ``normsys`` and ``histosys`` drawn from a pool of named experimental and theory
  systematics, each sample carrying a random subset; some asymmetric, some one-sided;
- the observed data are a Poisson draw from the background expectation.

``generate()`` returns the background-only workspace and the patches; ``stiff=True`` adds,
as in a published likelihood of issue 16, a ``shapesys`` of 0.001 on a yield of 435 (a
Poisson constraint with ``tau = (435 / 0.001)^2``, about ``1.9e11``).

    .venv/bin/python benchmarks/synthetic_workspace.py --out /tmp/synthetic   # writes JSON
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

CHANNEL_BINS = (1, 2, 2, 1, 3, 2, 1, 2)  # 8 channels, 14 bins
BACKGROUNDS = ("ttbar", "W", "Z", "diboson", "singletop", "ttV", "Higgs", "fakes", "QCD")
DATA_DRIVEN = ("fakes", "QCD")
NORMFACTORS = {"ttbar": "mu_ttbar", "W": "mu_W", "Z": "mu_Z"}
#: pool sizes chosen so that the model has 126 parameters: 1 POI + 3 normfactors + 1 lumi
#: + 14 staterror + 5 shapesys + 90 normsys + 12 histosys
N_NORMSYS = 90
N_HISTOSYS = 12
SHAPESYS_CHANNELS = (1, 4)  # fakes carries a shapesys in these channels (2 + 3 bins)


def _round(values) -> list[float]:
    return [float(round(v, 6)) for v in np.atleast_1d(values)]


def generate(
    seed: int = 16, n_patches: int = 125, stiff: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The background-only workspace and ``n_patches`` signal patches (``{"name", "patch"}``)."""
    rng = np.random.default_rng(seed)
    normsys_names = [f"syst_norm_{i:02d}" for i in range(N_NORMSYS)]
    histosys_names = [f"syst_shape_{i:02d}" for i in range(N_HISTOSYS)]
    channels = []
    observations = []
    for c, nb in enumerate(CHANNEL_BINS):
        samples = []
        total = np.zeros(nb)
        for s in BACKGROUNDS:
            scale = {"ttbar": 200, "W": 120, "Z": 60, "fakes": 40, "QCD": 15}.get(s, 10)
            nom = scale * rng.lognormal(0.0, 0.6, nb) * (1 + c / 4)
            mods: list[dict[str, Any]] = []
            if s in NORMFACTORS:
                mods.append({"name": NORMFACTORS[s], "type": "normfactor", "data": None})
            if s not in DATA_DRIVEN:
                mods.append({"name": "lumi", "type": "lumi", "data": None})
            mods.append(
                {
                    "name": f"staterror_ch{c}",
                    "type": "staterror",
                    "data": _round(nom * rng.uniform(0.02, 0.15, nb)),
                }
            )
            if s == "fakes" and c in SHAPESYS_CHANNELS:
                mods.append(
                    {
                        "name": f"fakes_shape_ch{c}",
                        "type": "shapesys",
                        "data": _round(nom * rng.uniform(0.1, 0.4, nb)),
                    }
                )
            for name in rng.choice(normsys_names, size=18, replace=False):
                width = rng.uniform(0.005, 0.15)
                kind = rng.random()
                if kind < 0.15:  # one-sided
                    hi, lo = 1 + width, 1.0
                elif kind < 0.35:  # asymmetric, same direction
                    hi, lo = 1 + width, 1 + width / 3
                else:
                    hi, lo = 1 + width, 1 - width * rng.uniform(0.6, 1.0)
                mods.append(
                    {
                        "name": str(name),
                        "type": "normsys",
                        "data": {"hi": round(hi, 6), "lo": round(lo, 6)},
                    }
                )
            for name in rng.choice(histosys_names, size=3, replace=False):
                shift = nom * rng.uniform(-0.08, 0.08, nb)
                lo_shift = -shift * rng.uniform(0.5, 1.2, nb)
                mods.append(
                    {
                        "name": str(name),
                        "type": "histosys",
                        "data": {"hi_data": _round(nom + shift), "lo_data": _round(nom + lo_shift)},
                    }
                )
            samples.append({"name": s, "data": _round(nom), "modifiers": mods})
            total += nom
        channels.append({"name": f"SR{c}" if c < 4 else f"CR{c - 4}", "samples": samples})
        observations.append({"name": channels[-1]["name"], "data": _round(rng.poisson(total))})
    if stiff:
        # a sample with a tiny shapesys on a large yield (issue 16: 0.001 on 435)
        ch = channels[0]
        ch["samples"].append(
            {
                "name": "stiff",
                "data": [435.0],
                "modifiers": [{"name": "stiff_shapesys", "type": "shapesys", "data": [0.001]}],
            }
        )
        observations[0]["data"] = [observations[0]["data"][0] + 435.0]
    workspace = {
        "channels": channels,
        "observations": observations,
        "measurements": [
            {
                "name": "NormalMeasurement",
                "config": {
                    "poi": "mu_SIG",
                    "parameters": [
                        {
                            "name": "lumi",
                            "auxdata": [1.0],
                            "sigmas": [0.017],
                            "bounds": [[0.915, 1.085]],
                            "inits": [1.0],
                        }
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }
    return workspace, _patches(rng, n_patches)


def _patches(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Signal points on a mass grid: a signal sample added to every channel."""
    side = int(np.ceil(np.sqrt(n)))
    patches = []
    for k in range(n):
        m1, m2 = 300 + 100 * (k // side), 50 + 50 * (k % side)
        strength = 30 * np.exp(-(m1 - 300) / 500) * (1 + m2 / 400)
        ops = []
        for c, nb in enumerate(CHANNEL_BINS):
            sig = strength * rng.lognormal(0, 0.7, nb) * (2.0 if c < 4 else 0.2)
            ops.append(
                {
                    "op": "add",
                    "path": f"/channels/{c}/samples/-",
                    "value": {
                        "name": "signal",
                        "data": _round(sig),
                        "modifiers": [
                            {"name": "mu_SIG", "type": "normfactor", "data": None},
                            {"name": "lumi", "type": "lumi", "data": None},
                            {
                                "name": "syst_norm_00",
                                "type": "normsys",
                                "data": {"hi": 1.1, "lo": 0.9},
                            },
                            {
                                "name": "syst_shape_00",
                                "type": "histosys",
                                "data": {
                                    "hi_data": _round(sig * 1.05),
                                    "lo_data": _round(sig * 0.96),
                                },
                            },
                        ],
                    },
                }
            )
        patches.append({"name": f"patch.synthetic_{m1}_{m2}.json", "patch": ops})
    return patches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for BkgOnly.json and the patches")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--patches", type=int, default=125)
    parser.add_argument("--stiff", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bkg, patches = generate(args.seed, args.patches, args.stiff)
    (out / "BkgOnly.json").write_text(json.dumps(bkg))
    for p in patches:
        (out / p["name"]).write_text(json.dumps(p["patch"]))
    print(f"wrote {out}: {len(patches)} patches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
