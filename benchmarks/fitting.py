"""Benchmark of the fitting service (issue 6): a signal grid as one request, and the
per-request overhead.

In one run, on this machine:

1. sbottom RegionA patches (all 217 by default, ``--patches N`` for a spread subset),
   ``hypotest`` at mu=1 with default settings, submitted as ONE request to the fitting
   service of a private local facility (engine ``pyhf``: one task per patch on the local
   worker pool, one worker per core) — versus a sequential loop of
   ``pyhf.infer.hypotest`` over the same patches in this process (one BLAS thread, as in
   each worker). Also the same request with ``engine=auto`` (the batched engine).
2. The per-request overhead of the service: a tiny one-bin workspace submitted and waited
   for (through the proxy, validation, queue, worker, database), versus the same hypotest
   run in-process; and an identical request served from the result cache.

    .venv/bin/python benchmarks/fitting.py               # all 217 patches (long)
    .venv/bin/python benchmarks/fitting.py --patches 16  # a subset

Writes the ``fitting`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# one thread for every numerical library, in this process and (inherited) in the facility
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from benchmarks.report import summary, write_section  # noqa: E402
from tests.facility import Facility  # noqa: E402
from tests.fitting.batched_helpers import extract_sbottom, load_region, spread  # noqa: E402
from tests.fitting_service.conftest import tiny_workspace  # noqa: E402


class Service:
    def __init__(self, fac: Facility, token: str):
        self.url = fac.url + "services/fitting/api/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def submit(self, body: dict) -> str:
        for _ in range(200):
            try:
                response = self.session.post(self.url + "jobs", json=body, timeout=600)
            except requests.ConnectionError:
                time.sleep(0.25)
                continue
            if response.status_code in (502, 503):
                time.sleep(0.25)
                continue
            response.raise_for_status()
            return response.json()["id"]
        raise RuntimeError("the fitting service never answered")

    def wait(self, job_id: str, poll: float = 0.05) -> dict:
        while True:
            job = self.session.get(self.url + f"jobs/{job_id}", timeout=60).json()
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(poll)

    def results(self, job_id: str) -> list[dict]:
        return self.session.get(self.url + f"jobs/{job_id}/results", timeout=60).json()["results"]

    def run(self, body: dict, poll: float = 0.05) -> tuple[float, dict, list[dict]]:
        t0 = time.perf_counter()
        job_id = self.submit(body)
        job = self.wait(job_id, poll)
        return time.perf_counter() - t0, job, self.results(job_id)


def sequential_pyhf(bkg: dict, patches: dict, names: list[str]) -> tuple[float, list[float]]:
    import jsonpatch
    import pyhf

    pyhf.set_backend("numpy", "scipy")
    values = []
    t0 = time.perf_counter()
    for name in names:
        workspace = pyhf.Workspace(jsonpatch.apply_patch(bkg, patches[name]))
        model = workspace.model()
        values.append(float(pyhf.infer.hypotest(1.0, workspace.data(model), model)))
    return time.perf_counter() - t0, values


def tiny_direct(spec: dict) -> float:
    import pyhf

    t0 = time.perf_counter()
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    pyhf.infer.hypotest(1.0, workspace.data(model), model)
    return time.perf_counter() - t0


def row(label: str, wall: float, n: int, speedup: float, efficiency: float | None) -> str:
    per_core = "" if efficiency is None else f"{efficiency:.0%}"
    return f"| {label} | {wall:.1f} | {n / wall:.2f} | {speedup:.2f} | {per_core} |"


def stats_row(label: str, stats: dict[str, float]) -> str:
    return f"| {label} | {stats['median']:.3f} | {stats['p95']:.3f} | {stats['mean']:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=217, help="patches of RegionA (<= 217)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tiny", type=int, default=20, help="tiny requests for the overhead")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="afhub-bench-fitting-") as tmp:
        root = extract_sbottom(Path(tmp) / "data")
        bkg, patches = load_region(root, "RegionA")
        names = spread(sorted(patches), min(args.patches, len(patches)))
        fac = Facility(Path(tmp) / "home", env={"AFHUB_FIT_WORKERS": str(args.workers)})
        load_before = os.getloadavg()[0]
        fac.start()
        try:
            password = fac.add_user("bench")
            service = Service(fac, fac.login("bench", password).new_token("bench"))
            body = {
                "workspace": bkg,
                "patches": [{"name": n, "patch": patches[n]} for n in names],
                "settings": {"engine": "pyhf"},
            }
            service.run({"workspace": tiny_workspace(obs=40.0)})  # the service is up, warm
            grid_wall, grid_job, grid_results = service.run(body, poll=0.5)
            batched_wall, batched_job, batched_results = service.run(
                {**body, "settings": {"engine": "auto"}}, poll=0.5
            )
            tiny_walls, direct_walls = [], []
            for i in range(args.tiny):
                spec = tiny_workspace(obs=45.0 + i)
                wall, job, _ = service.run({"workspace": spec, "settings": {"engine": "pyhf"}})
                assert job["state"] == "done", job
                tiny_walls.append(wall)
                direct_walls.append(tiny_direct(spec))
            cached_walls = [
                service.run(
                    {"workspace": tiny_workspace(obs=45.0), "settings": {"engine": "pyhf"}}
                )[0]
                for _ in range(args.tiny)
            ]
        finally:
            fac.stop()
        seq_wall, seq_values = sequential_pyhf(bkg, patches, names)
        load_after = os.getloadavg()[0]

    n = len(names)
    # how many workers were busy on average: the fits' own times over the wall time
    occupancy = sum(r["timings"].get("total", 0.0) for r in grid_results) / grid_wall
    converged = sum(r["status"] == "converged" for r in grid_results)
    agree = sum(
        1
        for r, v in zip(grid_results, seq_values, strict=True)
        if r["status"] == "converged" and abs(r["values"]["cls_obs"][0] - v) <= 1e-6 * abs(v)
    )
    speedup = seq_wall / grid_wall
    efficiency = speedup / args.workers
    batched_engines = sorted({r["engine"] for r in batched_results})
    tiny, direct, cached = summary(tiny_walls), summary(direct_walls), summary(cached_walls)
    rows = "\n".join(
        [
            row("sequential `pyhf.infer.hypotest`", seq_wall, n, 1.0, None),
            row(
                f"service, engine `pyhf`, {args.workers} workers", grid_wall, n, speedup, efficiency
            ),
            row(
                f"service, engine `auto` ({', '.join(batched_engines)})",
                batched_wall,
                n,
                seq_wall / batched_wall,
                None,
            ),
        ]
    )
    overhead_rows = "\n".join(
        [
            stats_row("pyhf in-process (build + hypotest)", direct),
            stats_row("service: submit → done (new request)", tiny),
            stats_row("service: submit → done (identical, cached)", cached),
        ]
    )
    table = f"""## Fitting service

`.venv/bin/python benchmarks/fitting.py --patches {args.patches}` (`make bench-fitting`)

sbottom RegionA, {n} of 217 patches{" (a spread subset)" if n < 217 else ""}, `hypotest` at
mu=1 (qtilde, asymptotics, numpy), one request to the service of a local facility with
{args.workers} worker processes, versus a sequential loop of `pyhf.infer.hypotest` in the
same run (one BLAS thread everywhere). Service times run from the POST (upload and
validation included) to the job's `done`.

| | wall (s) | fits/s | speedup vs sequential | per worker core |
|---|---:|---:|---:|---:|
{rows}

Service with engine `pyhf`: {converged}/{n} patches converged; CLs_obs equal to the
sequential loop's to 1e-6 relative for {agree}/{n}. Target: speedup within 90% of linear
in the worker cores ({efficiency:.0%} measured). Worker occupancy (the fits' own times
over the wall time): {occupancy:.2f} of {args.workers}. Load average of the machine before
and after the run: {load_before:.1f}, {load_after:.1f} (other processes compete for the
same cores when it exceeds the core count).

Per-request overhead, tiny one-bin workspace ({args.tiny} requests each, seconds):

| | median | p95 | mean |
|---|---:|---:|---:|
{overhead_rows}

Overhead of the service per request (median): {tiny["median"] - direct["median"]:.3f} s
(polling every 0.05 s; includes the proxy, token check, validation, database, queue and
the worker round trip).
"""
    print(table)
    if not args.no_write:
        print(f"written to {write_section('fitting', table)}")


if __name__ == "__main__":
    main()
