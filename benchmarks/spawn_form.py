"""Spawn-form render time in a real browser: afhub's per-user profile form vs a static one.

A local facility (``afhub up``, as ``make up`` starts it) gets a registry of 40 resources
(CPU, whole GPU, MIG slice, FPGA) applied with ``afhub resources apply``, all allowed to
``atlas``; the benchmark user is a member of ``atlas/higgs`` (inherits them), so afhub builds
a 40-profile form for every request of ``/hub/spawn`` (registry, groups, remaining quota,
kubespawner's ``form.html``, the "Charge to group" select).

The plain upstream way runs beside it: a JupyterHub with ``SimpleLocalProcessSpawner``,
``DummyAuthenticator`` and the same configurable-http-proxy, whose ``Spawner.options_form``
is the very HTML afhub served for that user, rendered once and set statically. The
difference between the two is therefore afhub's per-request profile building.

Headless Chromium (Playwright, the flags of ``tests/browser.py``) logs in to each hub once;
then each round opens a new tab and times from ``page.goto(.../hub/spawn)`` until the page's
``load`` event has fired (scripts run, handlers attached) and the first profile radio button
is visible and enabled. Rounds alternate between the hubs (ABAB...) after two warm-up
rounds each. The browser's Navigation Timing also gives the server's share (request start
to first response byte).

Run: ``make bench-spawn-form`` (or ``.venv/bin/python benchmarks/spawn_form.py --rounds 15``;
``--no-write`` leaves the docs alone).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import summary, write_section
from benchmarks.spawn import PlainHub
from tests.browser import CHROMIUM_ARGS, chromium_path
from tests.facility import Facility

USER = "bench"
RESOURCES = 40
FIRST_PROFILE = "#kubespawner-profiles-list input[name=profile]"


def registry_document(count: int = RESOURCES) -> dict:
    """``count`` resources of the kinds cpu, gpu (whole and MIG) and fpga, all for atlas."""
    providers = [
        {"name": "uchicago", "institution": "University of Chicago", "contacts": ["af@uc.example"]},
        {"name": "fnal", "institution": "Fermilab", "contacts": ["eaf@fnal.example"]},
    ]
    resources = []
    for i in range(count):
        kind = ("cpu", "gpu", "mig", "fpga")[i % 4]
        base = {
            "provider": "uchicago" if i % 2 == 0 else "fnal",
            "site": "UChicago AF" if i % 2 == 0 else "Fermilab EAF",
            "node_count": 1 + i % 5,
            "allowed_groups": ["atlas"],
        }
        if kind == "cpu":
            entry = {
                "name": f"cpu-pool-{i:02d}",
                "kind": "cpu",
                "cpu_per_node": 64,
                "memory_per_node": "256Gi",
                "node_selector": {"afhub.io/pool": f"cpu-{i}"},
                "image": "ghcr.io/afhub/notebook-cpu:2026.11",
                "images": ["ghcr.io/afhub/notebook-root:2026.11"],
            }
        elif kind == "gpu":
            entry = {
                "name": f"a100-80gb-{i:02d}",
                "kind": "gpu",
                "accelerator": "NVIDIA A100 80GB",
                "count_per_node": 4,
                "cpu_per_node": 64,
                "memory_per_node": "512Gi",
                "memory_choices": ["16Gi", "32Gi", "64Gi"],
                "extended_resource": "nvidia.com/gpu",
                "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                "image": "ghcr.io/afhub/notebook-gpu:2026.11",
                "image_pattern": r"^ghcr\.io/afhub/[a-z0-9-]+:[0-9]{4}\.[0-9]{2}$",
            }
        elif kind == "mig":
            entry = {
                "name": f"a100-mig-1g10gb-{i:02d}",
                "kind": "gpu",
                "accelerator": "NVIDIA A100 MIG 1g.10gb",
                "count_per_node": 7,
                "cpu_per_node": 32,
                "memory_per_node": "256Gi",
                "extended_resource": "nvidia.com/mig-1g.10gb",
                "image": "ghcr.io/afhub/notebook-gpu:2026.11",
            }
        else:
            entry = {
                "name": f"alveo-u250-{i:02d}",
                "kind": "fpga",
                "accelerator": "AMD/Xilinx Alveo U250",
                "count_per_node": 2,
                "cpu_per_node": 16,
                "memory_per_node": "64Gi",
                "extended_resource": "xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1-0",
                "image": "ghcr.io/afhub/notebook-fpga:2026.11",
            }
        resources.append({**entry, **base})
    return {"providers": providers, "resources": resources}


def served_form(hub: Facility, username: str, password: str) -> str:
    """The options form inside ``#spawn_form`` of the hub's spawn page, as served."""
    session = hub.login(username, password)
    html = session.get(urljoin(hub.hub_url, "spawn"), timeout=60).text
    match = re.search(
        r'id="spawn_form".*?role="form">(.*?)<br>\s*<div class="feedback-container">', html, re.S
    )
    if match is None or "kubespawner-profiles-list" not in match.group(1):
        raise RuntimeError("afhub's spawn page has no profile form")
    return match.group(1).strip()


class StaticFormHub(PlainHub):
    """The plain JupyterHub of ``benchmarks/spawn.py`` with a static ``options_form``."""

    def __init__(self, home: Path, form_html: str):
        super().__init__(home)
        self.form_html = form_html

    def extra_config(self) -> str:
        form = self.home / "options_form.html"
        form.write_text(self.form_html)
        return f"c.Spawner.options_form = open({str(form)!r}).read()\n"


def browser_login(context, hub: Facility, username: str, password: str) -> None:
    page = context.new_page()
    try:
        page.goto(urljoin(hub.hub_url, "login"), timeout=60_000)
        page.fill("input#username_input", username)
        page.fill("input#password_input", password)
        page.click("#login_submit")
        page.wait_for_url(lambda url: "/hub/login" not in url, timeout=60_000)
    finally:
        page.close()


def one_render(context, hub: Facility) -> tuple[float, float, int]:
    """Seconds to a loaded spawn page with the first profile visible and enabled, the
    server's share (request start to first byte) and the number of profiles shown."""
    page = context.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(urljoin(hub.hub_url, "spawn"), wait_until="load", timeout=60_000)
        first = page.locator(FIRST_PROFILE).first
        first.wait_for(state="visible", timeout=60_000)
        if not first.is_enabled():
            raise RuntimeError("the first profile radio button is disabled")
        elapsed = time.perf_counter() - t0
        server = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return (n.responseStart - n.requestStart) / 1000; }"
        )
        return elapsed, server, page.locator(FIRST_PROFILE).count()
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed renders per hub")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    path = chromium_path()
    if path is None:
        sys.exit("Chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"afhub": [], "plain": []}
    server: dict[str, list[float]] = {"afhub": [], "plain": []}
    shown: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        afhub = Facility(Path(tmp) / "afhub").start()
        plain = None
        try:
            password = afhub.add_user(USER)
            registry = Path(tmp) / "registry.yaml"
            registry.write_text(yaml.safe_dump(registry_document(), sort_keys=False))
            afhub.afhub("resources", "apply", str(registry))
            afhub.afhub("groups", "create", "atlas", "atlas/higgs")
            afhub.afhub("groups", "add-member", "atlas/higgs", USER)
            form_html = served_form(afhub, USER, password)
            plain = StaticFormHub(Path(tmp) / "plain", form_html).start()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
                contexts = {"afhub": browser.new_context(), "plain": browser.new_context()}
                hubs = {"afhub": afhub, "plain": plain}
                browser_login(contexts["afhub"], afhub, USER, password)
                browser_login(contexts["plain"], plain, USER, "anything")
                for name in ("afhub", "plain", "afhub", "plain"):  # warm-up
                    shown[name] = one_render(contexts[name], hubs[name])[2]
                for i in range(args.rounds):
                    order = ["afhub", "plain"] if i % 2 == 0 else ["plain", "afhub"]
                    for name in order:
                        elapsed, ttfb, _ = one_render(contexts[name], hubs[name])
                        times[name].append(elapsed)
                        server[name].append(ttfb)
                        print(
                            f"{name:6s} round {i + 1:2d}: {elapsed * 1000:7.1f} ms "
                            f"(server {ttfb * 1000:6.1f} ms)",
                            flush=True,
                        )
                browser.close()
        finally:
            afhub.stop()
            if plain is not None:
                plain.stop()
    load_after = os.getloadavg()
    if shown["afhub"] != shown["plain"]:
        raise RuntimeError(f"the forms differ: {shown}")

    a, p = summary(times["afhub"]), summary(times["plain"])
    sa, sp = summary(server["afhub"]), summary(server["plain"])

    def ms(v: float) -> str:
        return f"{v * 1000:.1f}"

    table = (
        "## Spawn form: render time in the browser\n\n"
        f"`make bench-spawn-form` (`benchmarks/spawn_form.py --rounds {args.rounds}`): "
        f"headless Chromium, {args.rounds} renders of `/hub/spawn` per hub, alternating, "
        "after two warm-up renders each; timed from navigation until the `load` event and "
        "the first profile radio button visible and enabled. afhub: the local facility "
        f"with {RESOURCES} registered resources (CPU, GPU, MIG, FPGA) allowed to `atlas`, "
        f"the user a member of `atlas/higgs`, so {shown['afhub']} profiles built per request. "
        "Plain = JupyterHub with `SimpleLocalProcessSpawner` and `DummyAuthenticator`, same "
        "proxy, whose `Spawner.options_form` is the HTML afhub served, set statically: the "
        "difference is afhub's per-request profile building. Same machine, same run.\n\n"
        "| hub | p50 (ms) | p95 (ms) | min (ms) | max (ms) | server p50 (ms) | "
        "server p95 (ms) |\n|---|---|---|---|---|---|---|\n"
        f"| afhub (profiles per request) | {ms(a['median'])} | {ms(a['p95'])} | "
        f"{ms(a['min'])} | {ms(a['max'])} | {ms(sa['median'])} | {ms(sa['p95'])} |\n"
        f"| plain JupyterHub (static form) | {ms(p['median'])} | {ms(p['p95'])} | "
        f"{ms(p['min'])} | {ms(p['max'])} | {ms(sp['median'])} | {ms(sp['p95'])} |\n"
        f"| **ratio afhub / plain** | **{a['median'] / p['median']:.2f}** | "
        f"**{a['p95'] / p['p95']:.2f}** | | | {sa['median'] / sp['median']:.2f} | "
        f"{sa['p95'] / sp['p95']:.2f} |\n\n"
        "Server = the browser's Navigation Timing, request start to the first response "
        "byte. Load average (1 min) "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after the run (Chromium and "
        f"both hubs included), on {os.cpu_count()} cores; the machine is shared with other "
        "work, and load inflates absolute times more than the ratio.\n"
    )
    print(table)
    if not args.no_write:
        print(f"written to {write_section('spawn-form', table)}")


if __name__ == "__main__":
    main()
