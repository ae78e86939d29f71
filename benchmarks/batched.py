"""Benchmark of the batched engine (issue 7): a whole signal grid in one computation.

sbottom RegionA, 217 patches, ``hypotest`` at mu=1 (``qtilde``, asymptotics):

- the batched engine on this machine's CPU (compile + fit of all patches, wall time);
- sequential pyhf (numpy backend, default settings) on the same CPU, in the same run;
- the batched engine's time per patch as the batch grows (1, 8, 32, 217 patches);
- on a CUDA device, when one is available, the same batched run on the GPU.

    .venv/bin/python benchmarks/batched.py            # everything (pyhf: ~10 min)
    .venv/bin/python benchmarks/batched.py --pyhf-budget 600   # stop pyhf after 600 s

Writes the ``batched`` section of ``docs/benchmarks.md`` and the pyhf results (reused by
``benchmarks/batched_gate.py``) to ``.afhub/batched_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

# one thread for every numerical library: pyhf (numpy/scipy) and torch run on one core each
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_section  # noqa: E402
from tests.fitting.batched_helpers import extract_sbottom, load_region, spread  # noqa: E402

BATCH_SIZES = (1, 8, 32, 217)


def _task(bkg, patches, names):
    from afhub.fitting.types import FitTask

    return FitTask(workspace=bkg, patches=tuple({"name": n, "patch": patches[n]} for n in names))


def _time_engine(engine, task) -> tuple[float, list]:
    t0 = time.perf_counter()
    results = engine.run(task)
    return time.perf_counter() - t0, results


def _pyhf_sequential(bkg, patches, names, budget: float) -> tuple[float, list[dict]]:
    """pyhf one patch after the other, until all are done or ``budget`` seconds have passed."""
    import jsonpatch
    import pyhf

    pyhf.set_backend("numpy")
    rows = []
    t0 = time.perf_counter()
    for k, name in enumerate(names, 1):
        if time.perf_counter() - t0 > budget:
            break
        ws = pyhf.Workspace(jsonpatch.apply_patch(bkg, patches[name]))
        model = ws.model()
        obs, exp = pyhf.infer.hypotest(1.0, ws.data(model), model, return_expected_set=True)
        rows.append(
            {
                "region": "RegionA",
                "patch": name,
                "cls_obs": float(obs),
                "cls_exp": [float(e) for e in exp],
            }
        )
        if k % 10 == 0:
            print(f"pyhf {k}/{len(names)}: {time.perf_counter() - t0:.0f} s", flush=True)
    return time.perf_counter() - t0, rows


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--pyhf-budget",
        type=float,
        default=float("inf"),
        help="stop sequential pyhf after this many seconds and extrapolate (patches are "
        "taken in a fixed pseudo-random order, so a partial run is a spread sample)",
    )
    parser.add_argument("--out", default=str(ROOT / ".afhub" / "batched_bench.json"))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    import pyhf
    import torch

    from afhub.fitting.batched import BatchedEngine

    tmp = Path(tempfile.mkdtemp(prefix="sbottom-"))
    extract_sbottom(tmp)
    bkg, patches = load_region(tmp, "RegionA")
    names = sorted(patches)
    load_before = _load()

    engine = BatchedEngine(num_threads=args.threads)
    # warm-up (imports, allocator), not counted
    engine.run(_task(bkg, patches, names[:2]))
    full_time, full_results = _time_engine(engine, _task(bkg, patches, names))
    converged = sum(r.status == "converged" for r in full_results)
    print(f"batched, 217 patches: {full_time:.2f} s ({converged} converged)", flush=True)
    scaling = {}
    for size in BATCH_SIZES:
        subset = spread(names, size, salt="bench") if size < len(names) else names
        best = min(_time_engine(engine, _task(bkg, patches, subset))[0] for _ in range(2))
        scaling[size] = best
        print(f"batch {size}: {best:.2f} s, {best / size * 1000:.1f} ms/patch", flush=True)

    gpu = None
    if torch.cuda.is_available():
        gpu_engine = BatchedEngine(device="cuda")
        gpu_engine.run(_task(bkg, patches, names[:2]))
        gpu_time, _ = _time_engine(gpu_engine, _task(bkg, patches, names))
        gpu = (torch.cuda.get_device_name(0), gpu_time)

    order = sorted(names, key=lambda n: zlib.crc32(n.encode()))
    pyhf_time, pyhf_rows = _pyhf_sequential(bkg, patches, order, args.pyhf_budget)
    pyhf_names = [r["patch"] for r in pyhf_rows]
    per_patch_pyhf = pyhf_time / len(pyhf_names)
    pyhf_total = per_patch_pyhf * len(names)
    print(f"pyhf sequential: {pyhf_time:.1f} s for {len(pyhf_names)} patches", flush=True)
    load_after = _load()

    by_name = {r.patch: r for r in full_results}
    diffs = []
    for row in pyhf_rows:
        r = by_name[row["patch"]]
        if r.status == "converged":
            diffs.append(
                max(
                    abs(r.values["cls_obs"][0] - row["cls_obs"]),
                    *(
                        abs(a - b)
                        for a, b in zip(r.values["cls_exp"][0], row["cls_exp"], strict=True)
                    ),
                )
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pyhf": pyhf_rows, "pyhf_seconds": pyhf_time}, indent=1))

    ratio = pyhf_total / full_time
    measured = (
        "measured"
        if len(pyhf_names) == len(names)
        else (f"extrapolated from {len(pyhf_names)} patches ({per_patch_pyhf:.2f} s each)")
    )
    lines = [
        "## Batched engine: a whole signal grid in one computation",
        "",
        f"`make bench-batched` (`benchmarks/batched.py --threads {args.threads}`): sbottom "
        "RegionA (ATLAS SUSY-2018-31, HEPData ins1748602), 217 patches, `hypotest` at mu=1 "
        f"(`qtilde`, asymptotics). torch {torch.__version__} (float64, {args.threads} "
        f"intra-op thread(s)), pyhf {pyhf.__version__} (numpy backend, default settings). "
        "Both timings include building the models from the workspace and patches.",
        "",
        "| engine | device | patches | wall time (s) | per patch (ms) |",
        "|---|---|---|---|---|",
        f"| batched | CPU | 217 | {full_time:.2f} | {full_time / len(names) * 1000:.1f} |",
        f"| pyhf sequential | CPU | {len(pyhf_names)} | {pyhf_time:.1f} | "
        f"{per_patch_pyhf * 1000:.0f} |",
    ]
    if gpu:
        lines.append(
            f"| batched | {gpu[0]} | 217 | {gpu[1]:.2f} | {gpu[1] / len(names) * 1000:.1f} |"
        )
    lines += [
        "",
        f"**Speed-up on the same CPU: {ratio:.0f}x** (pyhf for 217 patches {measured}: "
        f"{pyhf_total:.0f} s; target: at least 50x). "
        + ("No CUDA device was available to this run." if gpu is None else ""),
        "",
        "Batched engine, time per patch as the batch grows (best of two runs):",
        "",
        "| batch size | wall time (s) | per patch (ms) |",
        "|---|---|---|",
    ]
    for size, secs in scaling.items():
        lines.append(f"| {size} | {secs:.2f} | {secs / size * 1000:.1f} |")
    lines += [
        "",
        f"Agreement in this run: max |CLs difference| (observed and the five expected values) "
        f"over {len(diffs)} patches: {max(diffs):.1e}. The full three-region gate is in the "
        "next section.",
        "",
        f"Load average (1/5/15 min) before: {load_before}; after: {load_after} (the machine is "
        "shared; both engines ran in the same process, one after the other).",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_docs:
        write_section("batched", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
