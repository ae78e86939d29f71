"""Dask on the facility against its real peer: time to a gateway cluster with two ready
workers, and a fixed dask.array workload on it, for afhub's gateway and for a plain
``dask-gateway-server`` with the same local backend, in the same run.

(a) afhub: a real local facility is started (``tests/facility.py``), with the
``dask-gateway`` service as the hub runs it (``AfhubLocalBackend``, ledger charging,
limits, liveness loop, reached through the hub's proxy, TLS through the gateway's proxy).
The client is ``dask_gateway.Gateway`` with a user's hub token, as in a notebook.

(b) plain: ``dask-gateway-server`` started by this script on free loopback ports, with
upstream's ``UnsafeLocalBackend`` (the class ``AfhubLocalBackend`` derives from), the same
scheduler and worker commands, the same cluster settings as afhub's defaults (1 core,
1 thread, 2 GiB per worker; scheduler 1 core, 2 GiB), its own TLS proxy, and upstream's
``SimpleAuthenticator`` with a password. The plain gateway is reached directly, not
through the hub's proxy, and authenticates without a hub: the comparison is what a user
pays for afhub's gateway over the one they would run themselves.

Rounds alternate afhub/plain so that drift in the machine's load affects both alike.

Run: ``make bench-dask`` (``.venv/bin/python benchmarks/dask.py --rounds 5``); a quick run:
``benchmarks/dask.py --rounds 3``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import socket
import subprocess
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PLAIN_CONFIG = """
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = "bench-password"
c.UnsafeLocalBackend.db_url = "sqlite:///{home}/plain-gateway.sqlite"
c.UnsafeLocalBackend.db_encrypt_keys = [{key!r}]
c.UnsafeLocalBackend.clusters_directory = "{home}/plain-clusters"
c.UnsafeLocalBackend.cluster_status_period = 5.0
c.UnsafeLocalBackend.worker_status_period = 5.0
c.ClusterConfig.scheduler_cmd = ["{bindir}/dask", "scheduler"]
c.ClusterConfig.worker_cmd = ["{bindir}/dask", "worker"]
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_threads = 1
c.ClusterConfig.worker_memory = 2 * 2**30
c.ClusterConfig.scheduler_cores = 1
c.ClusterConfig.scheduler_memory = 2 * 2**30
"""


class PlainGateway:
    """A plain ``dask-gateway-server`` (upstream local backend and authenticator)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.api = free_port()
        self.proxy = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        import urllib.request

        from cryptography.fernet import Fernet

        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "plain_gateway_config.py"
        bindir = Path(sys.executable).parent
        config.write_text(
            PLAIN_CONFIG.format(
                api=self.api,
                proxy=self.proxy,
                home=self.home,
                bindir=bindir,
                key=Fernet.generate_key().decode(),  # encrypted at rest, as afhub's
            )
        )
        self.log = open(self.home / "plain-gateway.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(bindir / "dask-gateway-server"), "-f", str(config)],
            cwd=self.home,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                tail = (self.home / "plain-gateway.log").read_text()[-2000:]
                raise RuntimeError(f"plain gateway exited:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.api}/api/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("plain gateway did not answer /api/health in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (alternating)")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()

    from dask_gateway import Gateway, JupyterHubAuth

    load0 = os.getloadavg()

    times: dict[str, dict[str, list[float]]] = {
        "gateway": {"ready": [], "work": []},
        "plain": {"ready": [], "work": []},
    }
    from dask_gateway import BasicAuth

    with tempfile.TemporaryDirectory() as tmp:
        fac = Facility(Path(tmp) / "facility")
        plain = PlainGateway(Path(tmp) / "plain")
        fac.start(timeout=300)
        try:
            plain.start()
            plain_gateway = Gateway(
                address=f"http://127.0.0.1:{plain.api}",
                proxy_address=f"gateway://127.0.0.1:{plain.proxy}",
                auth=BasicAuth(username="bench", password="bench-password"),
            )
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
                    ("plain", lambda: gateway_round(plain_gateway)),
                ):
                    ready, work = run()
                    # collect the round's objects here, in the main thread: a cluster's
                    # Gateway collected in the client's IO-loop thread calls close() from
                    # its __del__ and waits on that same loop (a deadlock seen in a run)
                    gc.collect()
                    times[kind]["ready"].append(ready)
                    times[kind]["work"].append(work)
                    print(f"round {i + 1} {kind}: ready {ready:.2f} s, workload {work:.2f} s")
            gateway.close()
            plain_gateway.close()
        finally:
            plain.stop()
            fac.stop()
    g, pl = times["gateway"], times["plain"]
    gr, gw, pr, pw = (summary(v) for v in (g["ready"], g["work"], pl["ready"], pl["work"]))
    load1 = os.getloadavg()
    body = (
        "## Dask: afhub's gateway versus a plain dask-gateway\n\n"
        f"`make bench-dask` (`benchmarks/dask.py --rounds {args.rounds}`), on "
        f"{os.cpu_count()} cores (`{platform.machine()}`, Python "
        f"{platform.python_version()}). Each round, alternating: (a) afhub's "
        "`dask-gateway` service in a local facility (`AfhubLocalBackend`, ledger charging, "
        "limits, liveness loop), reached as a notebook does: through the hub's proxy with a "
        "user's hub token; (b) a plain `dask-gateway-server` started by the benchmark on "
        "free loopback ports, with upstream's `UnsafeLocalBackend` (the class afhub's "
        "backend derives from), the same `dask scheduler`/`dask worker` commands, the same "
        "cluster settings (workers of 1 core, 1 thread, 2 GiB; scheduler 1 core, 2 GiB), "
        "its own TLS proxy, and upstream's `SimpleAuthenticator` (a password, no hub). Both "
        "clients are `dask_gateway.Gateway`. Each: a new cluster scaled to 2 workers, then a "
        "fixed workload (6000x6000 random array in 1000x1000 chunks, "
        "`(x + x.T).mean(axis=0).sum()`), then shutdown.\n\n"
        "| | afhub median (s) | afhub p95 (s) | plain median (s) | plain p95 (s) | "
        "afhub/plain median | afhub/plain p95 |\n|---|---|---|---|---|---|---|\n"
        f"| cluster with 2 ready workers | {gr['median']:.2f} | {gr['p95']:.2f} | "
        f"{pr['median']:.2f} | {pr['p95']:.2f} | **{gr['median'] / pr['median']:.2f}** | "
        f"{gr['p95'] / pr['p95']:.2f} |\n"
        f"| workload | {gw['median']:.2f} | {gw['p95']:.2f} | {pw['median']:.2f} | "
        f"{pw['p95']:.2f} | **{gw['median'] / pw['median']:.2f}** | "
        f"{gw['p95'] / pw['p95']:.2f} |\n\n"
        "Why a password and not the hub for the plain gateway: the figure is what a user "
        "pays for afhub's gateway over the gateway they would run themselves, and the "
        "hub-token check (one call to the hub's API per new session, cached by "
        "dask-gateway-server) is part of afhub's price. Time to ready on afhub also "
        "includes the admission of the scheduler and of each worker in the ledger (a quota "
        "decision each) and the extra hop through the hub's proxy; the workload runs on the "
        "same kind of processes behind the same kind of TLS proxy, so its ratio should be "
        "near 1. Load average (1, 5, 15 min) of the machine: "
        f"{load0[0]:.1f}, {load0[1]:.1f}, {load0[2]:.1f} at start, "
        f"{load1[0]:.1f}, {load1[1]:.1f}, {load1[2]:.1f} at the end (the machine is "
        "shared); with few rounds, ratios within about 20% of 1 are noise.\n"
    )
    print(body)
    if not args.no_write:
        print(f"written to {write_section('dask', body)}")


if __name__ == "__main__":
    main()
