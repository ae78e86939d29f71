"""Dask on the facility: time to a gateway cluster with two ready workers, and a fixed
dask.array workload on that cluster versus ``distributed.LocalCluster`` with the same
workers (2 workers, 1 core and 1 thread each), in the same run.

A real local facility is started (``tests/facility.py``), with the ``dask-gateway``
service as the hub runs it (ledger charging, limits, TLS through the gateway's proxy). The
client is ``dask_gateway.Gateway`` with a user's hub token, as in a notebook. Rounds
alternate gateway/LocalCluster so that drift in the machine's load affects both alike.

Run: ``make bench-dask`` (``.venv/bin/python benchmarks/dask.py --rounds 5``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# run as a script, this file's folder comes first on sys.path and its name would shadow
# the dask package: keep only the project root
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks.report import summary, write_section  # noqa: E402
from tests.facility import Facility  # noqa: E402


def workload() -> float:
    """The fixed workload: a 6000x6000 random array in 1000x1000 chunks, x + x.T, means."""
    import dask.array as da

    x = da.random.RandomState(42).random_sample((6000, 6000), chunks=(1000, 1000))
    t0 = time.perf_counter()
    value = float((x + x.T).mean(axis=0).sum().compute())
    assert value > 0
    return time.perf_counter() - t0


def gateway_round(gateway) -> tuple[float, float]:
    t0 = time.perf_counter()
    cluster = gateway.new_cluster()
    cluster.scale(2)
    client = cluster.get_client()
    client.wait_for_workers(2, timeout=120)
    ready = time.perf_counter() - t0
    try:
        return ready, workload()
    finally:
        client.close()
        cluster.shutdown()


def local_round() -> tuple[float, float]:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        ready = time.perf_counter() - t0
        return ready, workload()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (alternating)")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()

    from dask_gateway import Gateway, JupyterHubAuth

    load0 = os.getloadavg()[0]

    times: dict[str, dict[str, list[float]]] = {
        "gateway": {"ready": [], "work": []},
        "local": {"ready": [], "work": []},
    }
    with tempfile.TemporaryDirectory() as tmp:
        fac = Facility(Path(tmp) / "facility")
        fac.start(timeout=300)
        try:
            session = fac.login("bench", fac.add_user("bench"))
            token = session.new_token("dask benchmark")
            gateway = Gateway(
                address=f"{fac.url}services/dask-gateway",
                proxy_address=f"gateway://127.0.0.1:{fac.gateway_proxy_port}",
                auth=JupyterHubAuth(api_token=token),
            )
            for i in range(args.rounds):
                for kind, run in (
                    ("gateway", lambda: gateway_round(gateway)),
                    ("local", local_round),
                ):
                    ready, work = run()
                    times[kind]["ready"].append(ready)
                    times[kind]["work"].append(work)
                    print(f"round {i + 1} {kind}: ready {ready:.2f} s, workload {work:.2f} s")
            gateway.close()
        finally:
            fac.stop()
    g, lc = times["gateway"], times["local"]
    gr, gw, lr, lw = (summary(v) for v in (g["ready"], g["work"], lc["ready"], lc["work"]))
    body = (
        "## Dask: gateway cluster versus LocalCluster\n\n"
        f"`make bench-dask` (`benchmarks/dask.py --rounds {args.rounds}`): a local facility "
        "with the `dask-gateway` service; the client is `dask_gateway.Gateway` with a user's "
        "hub token. Each round: a new cluster scaled to 2 workers (1 core, 1 thread each), "
        "then a fixed workload (6000x6000 random array in 1000x1000 chunks, "
        "`(x + x.T).mean(axis=0).sum()`), then shutdown; the same with "
        "`distributed.LocalCluster(n_workers=2, threads_per_worker=1)`; rounds alternate.\n\n"
        "| | gateway median (s) | gateway p95 (s) | LocalCluster median (s) | "
        "LocalCluster p95 (s) | ratio of medians |\n|---|---|---|---|---|---|\n"
        f"| cluster with 2 ready workers | {gr['median']:.2f} | {gr['p95']:.2f} | "
        f"{lr['median']:.2f} | {lr['p95']:.2f} | {gr['median'] / lr['median']:.2f} |\n"
        f"| workload | {gw['median']:.2f} | {gw['p95']:.2f} | {lw['median']:.2f} | "
        f"{lw['p95']:.2f} | **{gw['median'] / lw['median']:.2f}** |\n\n"
        "The gateway's cluster runs its scheduler and workers as processes started by the "
        "gateway, talks TLS through the gateway's proxy and charges every process to the "
        "ledger; LocalCluster's scheduler runs inside the benchmark's own process, next to "
        "the client. Time to ready includes the gateway's admission of the scheduler and "
        "each worker in the ledger and the TLS handshake through its proxy. "
        f"Load average of the machine during the run: {load0:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at the end (the machine is shared); with few rounds, "
        "ratios within about 20% of 1 are noise.\n"
    )
    print(body)
    if not args.no_write:
        print(f"written to {write_section('dask', body)}")


if __name__ == "__main__":
    main()
