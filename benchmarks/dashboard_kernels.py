"""Dashboards' prepared kernels: a page view of the quota dashboard, pool on versus off.

``python -m benchmarks.dashboard_kernels`` (``--rounds``): two facilities side by side, one
with the dashboards' kernel pool (``AFHUB_DASHBOARDS_KERNEL_POOL=2``, the default) and one
without (``0``: every page view starts its own kernel, as Voila does upstream). On each, a
group admin's page view of ``/services/dashboards/voila/render/quota.ipynb`` (HTTP GET with
the admin's token, timed until the body ends: the page is complete, every cell run) after
one untimed warm-up; the rounds alternate between the two facilities. Before each timed
view the pool is full again (read from the service's log) and the machine has been idle for
``--settle`` seconds. Writes its subsection of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.report import summary, write_section
from tests.facility import Facility

QUOTA_PAGE = "services/dashboards/voila/render/quota.ipynb"
KERNEL_ID = re.compile(r'"kernelId": "([0-9a-f-]{36})"')
READY = re.compile(r"prepared kernel [0-9a-f-]{36} ready \((\d+) ready\)|page view on prepared")
POOL = 2
#: the quota dashboard's output: its widgets (drawn by the browser from their state)
WIDGET = "application/vnd.jupyter.widget-view+json"


def prepare(fac: Facility) -> str:
    """A group ``atlas`` with a quota and its admin ``lead``; the admin's token."""
    api = fac.url + "services/facility/api/"
    headers = {"Authorization": f"token {fac.admin_token()}"}
    requests.post(api + "groups", json={"path": "atlas"}, headers=headers, timeout=60)
    password = fac.add_user("lead")
    requests.put(
        api + "groups/atlas/-/members/lead", json={"role": "admin"}, headers=headers, timeout=60
    ).raise_for_status()
    requests.put(
        api + "groups/atlas/-/quota",
        json={"gpu_hours": 100, "cpu_core_hours": 1000},
        headers=headers,
        timeout=60,
    ).raise_for_status()
    return fac.login("lead", password).new_token("benchmark")


def wait_for_dashboards(fac: Facility, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = fac.url + "services/dashboards/quota"
            if requests.get(url, allow_redirects=False, timeout=5).status_code == 302:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("the dashboards service did not come up")


def wait_for_full_pool(fac: Facility, timeout: float = 180) -> None:
    """Until the service's last pool event is its pool full again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = list(READY.finditer(fac.log_path.read_text(errors="replace")))
        if events and events[-1].group(1) == str(POOL):
            return
        time.sleep(0.5)
    raise RuntimeError("the kernel pool did not fill")


def page_view(fac: Facility, token: str) -> tuple[float, str]:
    """Seconds until the quota page's body has ended, and the page's kernel."""
    started = time.perf_counter()
    response = requests.get(
        fac.url + QUOTA_PAGE, headers={"Authorization": f"token {token}"}, timeout=300
    )
    seconds = time.perf_counter() - started
    response.raise_for_status()
    if not response.text.rstrip().endswith("</html>") or WIDGET not in response.text:
        raise RuntimeError(f"the quota page did not render:\n{response.text[-500:]}")
    return seconds, KERNEL_ID.search(response.text).group(1)


def section(times: dict[str, list[float]], prepared: int, args, load: float) -> str:
    on, off = summary(times["on"]), summary(times["off"])
    lines = [
        "### Prepared kernels: a quota page view, pool on versus off",
        "",
        f"`python -m benchmarks.dashboard_kernels --rounds {args.rounds} --settle "
        f"{args.settle}`: two facilities side by side, the dashboards' kernel pool on "
        f"(`AFHUB_DASHBOARDS_KERNEL_POOL={POOL}`) and off (`0`: a new kernel per page view, "
        "Voila's own way); a group admin's `GET /services/dashboards/voila/render/quota.ipynb` "
        "with a token header, timed until the body ends (every cell run), after one warm-up; "
        "rounds alternate between the facilities, each view with the pool full again and "
        f"{args.settle} s idle before it.",
        "",
        "| pool | median (s) | p95 (s) | min (s) | max (s) |",
        "|---|---|---|---|---|",
        f"| on ({POOL}) | {on['median']:.2f} | {on['p95']:.2f} | {on['min']:.2f} | "
        f"{on['max']:.2f} |",
        f"| off | {off['median']:.2f} | {off['p95']:.2f} | {off['min']:.2f} | {off['max']:.2f} |",
        "",
        f"Pool on / off (medians): {on['median'] / off['median']:.2f}. Page views of the "
        f"pool-on facility served by a prepared kernel: {prepared} of {args.rounds}. Load "
        f"average (1 min) before the run: {load:.1f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {"on": [], "off": []}
    prepared = 0
    with tempfile.TemporaryDirectory() as tmp:
        facilities = {
            "on": Facility(Path(tmp) / "on", env={"AFHUB_DASHBOARDS_KERNEL_POOL": str(POOL)}),
            "off": Facility(Path(tmp) / "off", env={"AFHUB_DASHBOARDS_KERNEL_POOL": "0"}),
        }
        try:
            tokens = {}
            for name, fac in facilities.items():
                fac.start()
                wait_for_dashboards(fac)
                tokens[name] = prepare(fac)
            for _round in range(args.rounds + 1):  # the first: warm-up, not timed
                for name, fac in facilities.items():
                    if name == "on":
                        wait_for_full_pool(fac)
                    time.sleep(args.settle)
                    seconds, kernel = page_view(fac, tokens[name])
                    print(name, f"{seconds:.2f}", kernel, flush=True)
                    if _round:
                        times[name].append(seconds)
                        log = fac.log_path.read_text(errors="replace")
                        prepared += name == "on" and f"page view on prepared kernel {kernel}" in log
        finally:
            for fac in facilities.values():
                fac.stop()
    body = section(times, prepared, args, load)
    print(body)
    if not args.no_write:
        write_section("dashboard-kernels", body)


if __name__ == "__main__":
    main()
