"""Helpers for the batched-engine tests and benchmarks: sbottom data, live pyhf references.

Used by ``tests/fitting/test_batched_*.py`` and ``benchmarks/batched*.py``. Nothing here
hard-codes pyhf results: references are computed with pyhf (numpy backend) when asked for.
"""

from __future__ import annotations

import json
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SBOTTOM_ARCHIVE = "data/likelihoods/sbottom_ATLAS-SUSY-2018-31.tar.gz"
REGIONS = ("RegionA", "RegionB", "RegionC")
#: pyhf's SLSQP tolerance for the reference fits ("converged with a tight tolerance")
TIGHT_TOLERANCE = 1e-10
#: two minima of ``2 NLL`` (about 100 on sbottom) closer than this are the same minimum:
#: float64 rounding in pyhf's own NLL evaluation and SLSQP's stopping rule are both larger
#: than 1e-9 absolute (seen: 2.2e-9 between pyhf's tight fit and the batched engine's)
NLL_TOLERANCE = 1e-8


def shared_dir() -> Path:
    """``$AFHUB_SHARED`` or the ``shared`` folder beside the project root."""
    env = os.environ.get("AFHUB_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


def extract_sbottom(target: Path) -> Path:
    """Extract the sbottom archive into ``target``; returns ``target``."""
    archive = shared_dir() / SBOTTOM_ARCHIVE
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target


def load_region(root: Path, region: str) -> tuple[dict[str, Any], dict[str, list]]:
    """Background-only workspace and ``{patch file name: JSON Patch}`` of one region."""
    folder = root / region
    bkg = json.loads((folder / "BkgOnly.json").read_text())
    patches = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("patch.*.json"))}
    return bkg, patches


def spread(names: list[str], count: int, salt: str = "") -> list[str]:
    """A deterministic, well-spread subset: the ``count`` names with the smallest CRC32."""
    ranked = sorted(names, key=lambda n: (zlib.crc32((salt + n).encode()), n))
    return sorted(ranked[:count])


@dataclass
class PyhfReference:
    """A pyhf (numpy) hypotest with everything needed to judge a disagreement."""

    cls_obs: float
    cls_exp: list[float]
    model: Any
    data: Any
    #: pyhf's AsymptoticCalculator (its ``fitted_pars`` hold the five best-fit points)
    calculator: Any = None


def pyhf_hypotest(
    bkg: dict[str, Any],
    patch: list,
    mu: float = 1.0,
    test_stat: str = "qtilde",
    tolerance: float | None = TIGHT_TOLERANCE,
) -> PyhfReference:
    """``pyhf.infer.hypotest`` with the numpy backend and a tight SLSQP tolerance."""
    import jsonpatch
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    ws = pyhf.Workspace(jsonpatch.apply_patch(bkg, patch) if patch else bkg)
    model = ws.model(
        modifier_settings={
            "normsys": {"interpcode": "code4"},
            "histosys": {"interpcode": "code4p"},
        }
    )
    data = ws.data(model)
    obs, exp, calc = pyhf.infer.hypotest(
        mu, data, model, test_stat=test_stat, return_expected_set=True, return_calculator=True
    )
    return PyhfReference(float(obs), [float(e) for e in exp], model, data, calc)


def _pyhf_order(model: Any, par_slices: dict[str, slice], x: np.ndarray) -> np.ndarray:
    """A parameter point in the batched engine's layout, in pyhf's."""
    pars = np.zeros(model.config.npars)
    for name, sl in par_slices.items():
        pars[model.config.par_slice(name)] = x[sl]
    return pars


def pyhf_twice_nll(model: Any, data: Any, par_slices: dict[str, slice], x: np.ndarray) -> float:
    """pyhf's ``twice_nll`` at a parameter point given in the batched engine's layout."""
    import pyhf

    pars = _pyhf_order(model, par_slices, x)
    return float(np.asarray(pyhf.infer.mle.twice_nll(pars, data, model)).reshape(-1)[0])


def compare_minima(bkg: dict[str, Any], patch: list, mu: float = 1.0) -> dict[str, Any]:
    """Which engine found the lower minimum, fit by fit, judged by pyhf's own ``twice_nll``.

    Runs the batched hypotest for one patch and pyhf's (tight tolerance), then evaluates
    pyhf's ``twice_nll`` at both engines' best-fit points: on the observed data for the fits
    to data, on pyhf's Asimov data for the fits to Asimov data (on the batched engine's
    Asimov data, with pyhf's Asimov fits redone there, where the batched fit that generates
    them found the lower minimum: otherwise the two would be fitted to different data).
    Returns, per fit, both values and ``batched_lower_or_equal`` (within
    :data:`NLL_TOLERANCE`).
    """
    import pyhf
    import torch

    from afhub.fitting.batched import asymptotics
    from afhub.fitting.batched.model import BatchedModel
    from afhub.fitting.batched.spec import apply_patch, compile_spec

    compiled = compile_spec(apply_patch(bkg, patch))
    model, data = BatchedModel.from_compiled([compiled])
    res = asymptotics.hypotest(model, data, torch.tensor([mu], dtype=torch.float64))
    ref = pyhf_hypotest(bkg, patch, mu)
    fitted = ref.calculator.fitted_pars
    asimov = ref.model.expected_data(fitted.asimov_pars)
    free_asimov, fixed_asimov = fitted.free_fit_to_asimov, fitted.fixed_poi_fit_to_asimov
    ours_gen = pyhf_twice_nll(
        ref.model, ref.data, compiled.par_slices, res.fits.asimov_gen.x[0].numpy()
    )
    theirs_gen = float(
        np.asarray(pyhf.infer.mle.twice_nll(fitted.asimov_pars, ref.data, ref.model)).ravel()[0]
    )
    if ours_gen < theirs_gen - NLL_TOLERANCE:
        # the batched Asimov data come from a lower minimum of the fit that generates them:
        # the two engines' Asimov fits are on different data, so pyhf's are redone on the
        # batched engine's Asimov data (the same data for both)
        asimov = ref.model.expected_data(
            _pyhf_order(ref.model, compiled.par_slices, res.fits.asimov_gen.x[0].numpy())
        )
        free_asimov = pyhf.infer.mle.fit(asimov, ref.model)
        fixed_asimov = pyhf.infer.mle.fixed_poi_fit(mu, asimov, ref.model)
    pairs = {
        "free_data": (res.fits.free_data, fitted.free_fit_to_data, ref.data),
        "fixed_poi_data": (res.fits.fixed_data, fitted.fixed_poi_fit_to_data, ref.data),
        "asimov_generation": (res.fits.asimov_gen, fitted.asimov_pars, ref.data),
        "free_asimov": (res.fits.free_asimov, free_asimov, asimov),
        "fixed_poi_asimov": (res.fits.fixed_asimov, fixed_asimov, asimov),
    }
    out: dict[str, Any] = {
        "batched_cls_obs": float(res.cls_obs[0, 0]),
        "batched_cls_exp": res.cls_exp[0, 0].tolist(),
        "pyhf_cls_obs": ref.cls_obs,
        "pyhf_cls_exp": ref.cls_exp,
        "fits": {},
    }
    for name, (ours, theirs, d) in pairs.items():
        at_ours = pyhf_twice_nll(ref.model, d, compiled.par_slices, ours.x[0].numpy())
        at_theirs = float(np.asarray(pyhf.infer.mle.twice_nll(theirs, d, ref.model)).ravel()[0])
        out["fits"][name] = {
            "pyhf_twice_nll_at_batched": at_ours,
            "pyhf_twice_nll_at_pyhf": at_theirs,
            "batched_lower_or_equal": at_ours <= at_theirs + NLL_TOLERANCE,
        }
    return out
