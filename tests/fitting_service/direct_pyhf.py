"""pyhf run directly (no afhub code) on one patch: hypotest, upper limit and fit, as JSON.

Run as ``python -m tests.fitting_service.direct_pyhf BKG PATCH LOW HIGH POINTS`` with the
same numerical environment as the service's workers (one BLAS thread), so that the numbers
can be compared to 1e-6: the best-fit values of weakly constrained parameters move by the
optimizer's tolerance (about 2.5e-5 on the sbottom reference point) when only the BLAS
thread count differs.
"""

from __future__ import annotations

import json
import sys

import jsonpatch
import numpy as np
import pyhf


def main(bkg_path: str, patch_path: str, low: str, high: str, points: str) -> None:
    with open(bkg_path) as f:
        bkg = json.load(f)
    with open(patch_path) as f:
        patch = json.load(f)
    workspace = pyhf.Workspace(jsonpatch.apply_patch(bkg, patch))
    model = workspace.model()
    data = workspace.data(model)
    pyhf.set_backend("numpy", "scipy")
    obs, exp = pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
    scan = np.linspace(float(low), float(high), int(points))
    obs_limit, exp_limits = pyhf.infer.intervals.upper_limits.upper_limit(
        data, model, scan=scan, level=0.05
    )
    best, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    print(
        json.dumps(
            {
                "cls_obs": float(obs),
                "cls_exp": [float(e) for e in exp],
                "obs_limit": float(obs_limit),
                "exp_limits": [float(e) for e in exp_limits],
                "best": [float(x) for x in best],
                "twice_nll": float(twice_nll),
                "par_order": list(model.config.par_order),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:6])
