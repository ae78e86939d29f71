"""Benchmark of the fitting service (issue 6): a signal grid as one request on the local
and the Dask executor, scaling with the worker count, and the per-request overhead.

In one run, on this machine:

1. sbottom RegionA patches (all 217 by default, ``--patches N`` for a spread subset),
   ``hypotest`` at mu=1 with default settings, engine ``pyhf`` (one task per patch),
   submitted as ONE request to the fitting service of a private local facility with
   ``--workers`` workers (default: one per core), once on the ``local`` executor and once on
   the ``dask`` executor (a LocalCluster the service owns, same worker count) — versus a
   sequential loop of ``pyhf.infer.hypotest`` over the same patches in this process (one
   BLAS thread, as in each worker), and versus the same loop body in a plain
   ``ProcessPoolExecutor`` with as many processes (the upstream way to use the cores, and
   the ceiling this machine's cores allow). Also the same request with ``engine=auto``
   (batched).
2. Scaling: the same kind of request with 1 worker (on ``--scaling-patches`` of them, or
   all), against ``--workers`` workers on the same patches.
3. The per-request overhead of the service: a tiny one-bin workspace submitted and waited
   for (through the proxy, validation, queue, worker, database), versus the same hypotest
   run in-process; and an identical request served from the result cache.

The machine's load average is sampled during every run and reported with it.

    .venv/bin/python benchmarks/fitting.py               # all 217 patches (long)
    .venv/bin/python benchmarks/fitting.py --patches 16  # a subset
    .venv/bin/python benchmarks/fitting.py --phases sequential,pool --section fitting-pool

Writes the ``fitting`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
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
from tests.support.workspaces import tiny_workspace  # noqa: E402


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


def fit_patch(bkg: dict, patch: list) -> tuple[float, float]:
    """The loop body, the same in the sequential loop and the plain pool: one patched
    workspace, ``hypotest`` at mu=1; CLs_obs and the seconds it took."""
    import jsonpatch
    import pyhf

    t = time.perf_counter()
    workspace = pyhf.Workspace(jsonpatch.apply_patch(bkg, patch))
    model = workspace.model()
    return float(pyhf.infer.hypotest(1.0, workspace.data(model), model)), time.perf_counter() - t


def sequential_pyhf(
    bkg: dict, patches: dict, names: list[str]
) -> tuple[float, list[float], dict[str, float]]:
    """The sequential loop: wall time, CLs_obs per patch, seconds per patch."""
    import pyhf

    pyhf.set_backend("numpy", "scipy")
    values, times = [], {}
    t0 = time.perf_counter()
    for name in names:
        value, times[name] = fit_patch(bkg, patches[name])
        values.append(value)
    return time.perf_counter() - t0, values, times


PHASES = ("local", "one", "many", "sequential", "pool", "dask")
_POOL: dict = {}


def _pool_init(bkg: dict, patches: dict) -> None:
    import pyhf

    pyhf.set_backend("numpy", "scipy")
    _POOL.update(bkg=bkg, patches=patches)


def _pool_fit(name: str) -> tuple[str, float, float]:
    return name, *fit_patch(_POOL["bkg"], _POOL["patches"][name])


def pool_pyhf(
    bkg: dict, patches: dict, names: list[str], workers: int
) -> tuple[float, list[float], dict[str, float]]:
    """The plain upstream way to use the cores: the same loop body in a
    ``ProcessPoolExecutor`` of ``workers`` processes (pool start-up included)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_pool_init,
        initargs=(bkg, patches),
    ) as pool:
        done = {name: (value, seconds) for name, value, seconds in pool.map(_pool_fit, names)}
    wall = time.perf_counter() - t0
    return wall, [done[n][0] for n in names], {n: done[n][1] for n in names}


class Load:
    """The machine's 1-minute load average, sampled every 5 s in the background."""

    def __init__(self) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(5):
            self.samples.append(os.getloadavg()[0])

    def mark(self) -> int:
        return len(self.samples)

    def since(self, mark: int) -> str:
        window = self.samples[max(0, mark - 1) :] or self.samples[-1:]
        return f"{min(window):.1f}-{max(window):.1f} (mean {sum(window) / len(window):.1f})"

    def stop(self) -> None:
        self._stop.set()


def facility(home: Path, executor: str, workers: int) -> Facility:
    env = {"AFHUB_FIT_WORKERS": str(workers), "AFHUB_FIT_EXECUTOR": executor}
    if executor == "dask":
        env["AFHUB_FIT_DASK_WORKERS"] = str(workers)
    return Facility(home, env=env)


def grid_on(home: Path, executor: str, workers: int, body: dict, load: Load, *, extra=None) -> dict:
    """One facility with this executor and worker count: a warm-up request, then the grid
    as one request (and ``extra(service)``); wall time, results, load while it ran."""
    fac = facility(home, executor, workers)
    fac.start(timeout=300)  # the shared machine may be loaded
    try:
        password = fac.add_user("bench")
        service = Service(fac, fac.login("bench", password).new_token("bench"))
        # the service and its workers are up and warm
        service.run({"workspace": tiny_workspace(obs=40.0), "settings": {"engine": "pyhf"}})
        mark = load.mark()
        wall, job, results = service.run(body, poll=0.5)
        out = {"wall": wall, "job": job, "results": results, "load": load.since(mark)}
        if extra is not None:
            out.update(extra(service))
        return out
    finally:
        fac.stop()


def tiny_direct(spec: dict) -> float:
    import pyhf

    t0 = time.perf_counter()
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    pyhf.infer.hypotest(1.0, workspace.data(model), model)
    return time.perf_counter() - t0


def stats_row(label: str, stats: dict[str, float]) -> str:
    return f"| {label} | {stats['median']:.3f} | {stats['p95']:.3f} | {stats['mean']:.3f} |"


def occupancy(run: dict) -> float:
    """How many workers were busy on average: the fits' own times over the wall time."""
    return sum(r["timings"].get("total", 0.0) for r in run["results"]) / run["wall"]


def agreeing(results: list[dict], values: list[float]) -> int:
    return sum(
        1
        for r, v in zip(results, values, strict=True)
        if r["status"] == "converged" and abs(r["values"]["cls_obs"][0] - v) <= 1e-6 * abs(v)
    )


def render(args: argparse.Namespace, st: dict) -> str:
    """The report of what has been measured so far (phases not run yet are listed)."""
    workers, names, scaling = args.workers, st["names"], st["scaling"]
    n = len(names)
    local, dask, one, many = (st.get(k) for k in ("local", "dask", "one", "many"))
    seq = st.get("sequential")
    rows, notes = [], []
    if seq is not None:
        rows.append(
            f"| sequential `pyhf.infer.hypotest` | {n} | {seq['wall']:.1f} | "
            f"{n / seq['wall']:.2f} | 1.00 | | 1.00 | {seq['load']} |"
        )

    def line(label: str, run: dict, count: int, seq_wall: float | None, cores: int) -> str:
        wall = run["wall"]
        speed = "" if seq_wall is None else f"{seq_wall / wall:.2f}"
        per_core = "" if seq_wall is None else f"{seq_wall / wall / cores:.0%}"
        return (
            f"| {label} | {count} | {wall:.1f} | {count / wall:.2f} | {speed} | "
            f"{per_core} | {occupancy(run):.2f} | {run['load']} |"
        )

    seq_wall = None if seq is None else seq["wall"]
    pool = st.get("pool")
    if pool is not None:
        wall = pool["wall"]
        speed = per_core = ""
        if seq_wall is not None:
            speed, per_core = f"{seq_wall / wall:.2f}", f"{seq_wall / wall / workers:.0%}"
        rows.append(
            f"| plain pyhf, `ProcessPoolExecutor` of {workers} | {n} | {wall:.1f} | "
            f"{n / wall:.2f} | {speed} | {per_core} | "
            f"{sum(pool['times'].values()) / wall:.2f} | {pool['load']} |"
        )
    if local is not None:
        rows.append(
            line(f"service, `local` executor, {workers} workers", local, n, seq_wall, workers)
        )
    if dask is not None:
        rows.append(
            line(f"service, `dask` executor, {workers} workers", dask, n, seq_wall, workers)
        )
    if local is not None:
        engines = ", ".join(sorted({r["engine"] for r in local["batched_results"]}))
        speed = "" if seq_wall is None else f"{seq_wall / local['batched_wall']:.2f}"
        rows.append(
            f"| service, engine `auto` ({engines}), {workers} workers | {n} | "
            f"{local['batched_wall']:.1f} | {n / local['batched_wall']:.2f} | {speed} | | | "
            f"{local['batched_load']} |"
        )
    seq_scaling = None if seq is None else sum(seq["times"][name] for name in scaling)
    if one is not None:
        rows.append(line("service, `local` executor, 1 worker", one, len(scaling), seq_scaling, 1))
    if many is not None and many is not local:
        rows.append(
            line(
                f"service, `local` executor, {workers} workers (same patches)",
                many,
                len(scaling),
                seq_scaling,
                workers,
            )
        )
    if local is not None:
        converged = sum(r["status"] == "converged" for r in local["results"])
        notes.append(f"Local executor: {converged}/{n} patches converged.")
        if seq is not None:
            notes.append(
                f"CLs_obs equal to the sequential loop's to 1e-6 relative: "
                f"{agreeing(local['results'], seq['values'])}/{n} (local)"
                + (
                    f", {agreeing(dask['results'], seq['values'])}/{n} (dask)."
                    if dask is not None
                    else "."
                )
            )
    if local is not None and dask is not None:
        same = sum(
            a["status"] == b["status"] and a["values"] == b["values"]
            for a, b in zip(local["results"], dask["results"], strict=True)
        )
        notes.append(
            f"Dask executor: {same}/{n} results identical to the local executor's (status "
            f"and numbers); wall time {dask['wall'] / local['wall']:.2f}x the local one's."
        )
    if one is not None and many is not None:
        ratio = one["wall"] / many["wall"]
        notes.append(
            f"Scaling: {workers} workers against 1 worker on the same {len(scaling)} patches: "
            f"{ratio:.2f}x faster, {ratio / workers:.0%} of linear."
        )
    if local is not None and seq is not None:
        notes.append(
            f"Against the sequential loop (one core): "
            f"{seq['wall'] / local['wall'] / workers:.0%} of linear per worker core (local)"
            + (f", {seq['wall'] / dask['wall'] / workers:.0%} (dask)." if dask is not None else ".")
        )
    if pool is not None and seq is not None:
        per_fit_seq = seq["wall"] / n
        per_fit_pool = sum(pool["times"].values()) / n
        notes.append(
            f"The machine's own ceiling: plain pyhf in {workers} processes runs at "
            f"{seq['wall'] / pool['wall'] / workers:.0%} of linear against the sequential loop; "
            f"a fit takes {per_fit_pool:.2f} s in the pool against {per_fit_seq:.2f} s alone "
            f"({per_fit_pool / per_fit_seq - 1:+.0%}: the cores share caches and memory)."
        )
        if local is not None:
            notes.append(
                f"The service's `local` executor against the plain pool: "
                f"{pool['wall'] / local['wall']:.2f}x its speed."
            )
    notes.append("Target: within 90% of linear in the worker cores.")
    missing = [k for k in st["phases"] if k not in st]
    if missing:
        notes.append(f"**Not measured in this run** (stopped before): {', '.join(missing)}.")
    overhead = ""
    if local is not None:
        tiny, direct, cached = (summary(local[k]) for k in ("tiny", "direct", "cached"))
        overhead_rows = "\n".join(
            [
                stats_row("pyhf in-process (build + hypotest)", direct),
                stats_row("service: submit → done (new request)", tiny),
                stats_row("service: submit → done (identical, cached)", cached),
            ]
        )
        overhead = f"""
Per-request overhead, tiny one-bin workspace ({args.tiny} requests each, seconds; local
executor):

| | median | p95 | mean |
|---|---:|---:|---:|
{overhead_rows}

Overhead of the service per request (median): {tiny["median"] - direct["median"]:.3f} s
(polling every 0.05 s; includes the proxy, token check, validation, database, queue and
the worker round trip).
"""
    subset = "" if scaling == names else f" ({len(scaling)} of them, spread)"
    command = f"--patches {args.patches} --workers {workers}"
    if scaling != names:
        command += f" --scaling-patches {args.scaling_patches}"
    if args.phases != ",".join(PHASES):
        command += f" --phases {args.phases}"
    if args.section != "fitting":
        command += f" --section {args.section}"
    title = "" if args.section == "fitting" else f" (`{args.section}`)"
    return f"""## Fitting service{title}

`.venv/bin/python benchmarks/fitting.py {command}` (`make bench-fitting`), started
{st["started"]} UTC; load average before: {st["load_before"]}

sbottom RegionA, {n} of 217 patches{" (a spread subset)" if n < 217 else ""}, `hypotest` at
mu=1 (qtilde, asymptotics, numpy), engine `pyhf` (one task per patch), ONE request to the
fitting service of a local facility, versus a sequential loop of `pyhf.infer.hypotest` in
the same run (one BLAS thread everywhere). Service times run from the POST (upload and
validation included) to the job's `done`. Executors: `local` (the service's pool of
killable processes) and `dask` (a `distributed.LocalCluster` the service owns, one thread
per worker, each fit in a killable process inside the task). The 1-worker run (scaling)
fits the patches{subset}; its speedup compares with the sequential loop's time for the same
patches. The plain pool runs the sequential loop's body in a `ProcessPoolExecutor` with as
many processes as the service has workers: what the cores allow without a service.
Occupancy: the fits' own times over the wall time (how many workers were busy on average).
Load: the machine's 1-minute load average during each run (min-max, mean), sampled every 5 s;
the machine has {os.cpu_count()} cores and is shared with other work.

| run | patches | wall (s) | fits/s | speedup vs sequential | per worker core | occupancy | load |
|---|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

{chr(10).join("- " + note for note in notes)}
{overhead}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=217, help="patches of RegionA (<= 217)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--scaling-patches",
        type=int,
        default=0,
        help="patches for the 1-worker vs --workers scaling runs (default: --patches)",
    )
    parser.add_argument("--tiny", type=int, default=20, help="tiny requests for the overhead")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask executor run")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--section", default="fitting", help="section of docs/benchmarks.md to write"
    )
    args = parser.parse_args()
    workers = args.workers
    chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")

    load = Load()
    st: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }

    def report() -> None:
        """Write what has been measured so far: an interrupted run still leaves figures."""
        table = render(args, st)
        print(table, flush=True)
        if not args.no_write:
            print(f"written to {write_section(args.section, table)}", flush=True)

    with tempfile.TemporaryDirectory(prefix="afhub-bench-fitting-") as tmp:
        root = extract_sbottom(Path(tmp) / "data")
        bkg, patches = load_region(root, "RegionA")
        names = spread(sorted(patches), min(args.patches, len(patches)))
        scaling = names
        if 0 < args.scaling_patches < len(names):
            scaling = spread(names, args.scaling_patches, salt="scaling")
        st.update(names=names, scaling=scaling)
        st["phases"] = [
            p
            for p in PHASES
            if p in chosen
            and not (p == "many" and scaling == names)
            and not (p == "dask" and args.no_dask)
        ]

        def body(which: list[str], engine: str = "pyhf") -> dict:
            return {
                "workspace": bkg,
                "patches": [{"name": n, "patch": patches[n]} for n in which],
                "settings": {"engine": engine},
            }

        def overhead_and_batched(service: Service) -> dict:
            mark = load.mark()
            batched_wall, _, batched_results = service.run(body(names, "auto"), poll=0.5)
            batched_load = load.since(mark)
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
            return {
                "batched_wall": batched_wall,
                "batched_results": batched_results,
                "batched_load": batched_load,
                "tiny": tiny_walls,
                "direct": direct_walls,
                "cached": cached_walls,
            }

        home = Path(tmp)
        phases = st["phases"]
        # the cheap phases first, so that a run stopped early still reports them
        if "local" in phases:
            st["local"] = grid_on(
                home / "local", "local", workers, body(names), load, extra=overhead_and_batched
            )
            if scaling == names:
                st["many"] = st["local"]
            report()
        if "one" in phases:
            st["one"] = grid_on(home / "one", "local", 1, body(scaling), load)
            report()
        if "many" in phases:
            st["many"] = grid_on(home / "many", "local", workers, body(scaling), load)
            report()
        for phase, loop in (
            ("sequential", sequential_pyhf),
            ("pool", lambda *a: pool_pyhf(*a, workers)),
        ):
            if phase in phases:
                mark = load.mark()
                wall, values, times = loop(bkg, patches, names)
                st[phase] = {"wall": wall, "values": values, "times": times}
                st[phase]["load"] = load.since(mark)
                report()
        if "dask" in phases:
            st["dask"] = grid_on(home / "dask", "dask", workers, body(names), load)
            report()
    load.stop()


if __name__ == "__main__":
    main()
