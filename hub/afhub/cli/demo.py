"""``afhub up --demo``: a facility with something to try at once.

The demo adds, to the facility of ``$AFHUB_HOME``:

- an example registry: a *simulated* GPU, MIG slices of a GPU and an FPGA on this machine
  (nothing is attached; a server on them gets ``AFHUB_DEVICES_SIMULATED=1``), so the spawn
  form offers CPU, GPU, MIG and FPGA profiles;
- a group tree with quotas: ``atlas``, ``atlas/higgs``, ``atlas/higgs/students``, ``cms``;
- two local accounts with generated passwords, printed once and kept (mode 0600) in
  ``$AFHUB_HOME/demo-password-<name>``: ``lead`` (admin of ``atlas/higgs``) and ``student``
  (member of ``atlas/higgs/students``);
- the example likelihood of :mod:`afhub.fitting.examples` (a background-only workspace and a
  patchset over a mass grid) in ``examples/`` of each demo user's home.

Seeding is idempotent: what exists already (a group, its quota, a membership, an account,
a file) is left as it is, so a second ``afhub up --demo`` neither duplicates nor resets
anything. The registry entries are API entries (like ``afhub resources add``): an operator
may change or remove them afterwards.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afhub.cli.database import fail, sqlite_file, with_stores
from afhub.fitting.examples import example_likelihood
from afhub.settings import FacilitySettings

#: where the demo's entries, groups, accounts and files come from: said in every entry
SIMULATED_NOTE = (
    "Simulated on this machine for the demo: no device is attached; a server here gets "
    "AFHUB_DEVICES_SIMULATED=1."
)
DEMO_PROVIDER = {
    "name": "demo",
    "institution": "afhub demo (simulated devices)",
    "contacts": ["the facility's admin"],
}


def _simulated(name: str, kind: str, accelerator: str, count: int, **extra: Any) -> dict:
    return {
        "name": name,
        "provider": DEMO_PROVIDER["name"],
        "site": "this machine",
        "kind": kind,
        "accelerator": f"Simulated {accelerator}",
        "count_per_node": count,
        "node_count": 1,
        "cpu_per_node": 2,
        "memory_per_node": "4Gi",
        "description": f"{kind.upper()}: simulated {accelerator}. {SIMULATED_NOTE}",
        **extra,
    }


DEMO_RESOURCES = (
    _simulated(
        "demo-gpu",
        "gpu",
        "NVIDIA A100 80GB",
        2,
        extended_resource="nvidia.com/gpu",
        image="ghcr.io/afhub/notebook-gpu:dev",
        allowed_groups=["atlas", "cms"],
    ),
    _simulated(
        "demo-mig",
        "gpu",
        "NVIDIA A100 MIG 1g.10gb",
        7,
        extended_resource="nvidia.com/mig-1g.10gb",
        image="ghcr.io/afhub/notebook-gpu:dev",
        allowed_groups=["atlas"],
    ),
    _simulated(
        "demo-fpga",
        "fpga",
        "AMD Alveo U250",
        1,
        extended_resource="xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1-0",
        image="ghcr.io/afhub/notebook-fpga:dev",
        allowed_groups=["atlas/higgs", "cms"],
    ),
)

#: groups, parents first, with the quota each gets when the demo creates it
DEMO_GROUPS: tuple[tuple[str, dict[str, float | int]], ...] = (
    ("atlas", {"gpu_hours": 100, "cpu_core_hours": 5000, "max_servers": 20, "max_gpus": 8}),
    ("atlas/higgs", {"gpu_hours": 40, "max_servers": 10, "max_gpus": 4, "max_dask_cores": 16}),
    (
        "atlas/higgs/students",
        {"gpu_hours": 10, "max_servers": 3, "max_gpus": 1, "max_dask_cores": 4},
    ),
    ("cms", {"gpu_hours": 50, "max_servers": 10, "max_gpus": 2}),
)


@dataclass(frozen=True)
class DemoUser:
    name: str
    group: str
    role: str

    def describe(self) -> str:
        return f"{self.role} of {self.group}"


DEMO_USERS = (
    DemoUser("lead", "atlas/higgs", "admin"),
    DemoUser("student", "atlas/higgs/students", "member"),
)
#: the folder of each demo user's home that holds the example likelihood
EXAMPLES_FOLDER = "examples"


def password_path(settings: FacilitySettings, name: str) -> Path:
    """Where the demo keeps ``name``'s password (mode 0600), like the admin's."""
    return settings.home_path / f"demo-password-{name}"


def home_of(settings: FacilitySettings, name: str) -> Path:
    """``name``'s home folder, as the local spawner names it."""
    from afhub.spawners.local import safe_name

    return settings.user_homes_path / safe_name(name)


# --- the facility database: registry, groups, quotas, memberships -------------------------


def _seed_registry(stores: Any, said: list[str]) -> None:
    if stores.registry.get_provider(DEMO_PROVIDER["name"]) is None:
        stores.registry.add_provider(DEMO_PROVIDER)
    for entry in DEMO_RESOURCES:
        if stores.registry.get_resource(entry["name"]) is None:
            stores.registry.add_resource(entry)
            said.append(f"registered {entry['name']} ({entry['accelerator']})")


def _seed_groups(stores: Any, said: list[str]) -> None:
    existing = {g.path for g in stores.groups.list()}
    for path, quota in DEMO_GROUPS:
        if path in existing:
            continue
        stores.groups.create(path)
        stores.quotas.set(path, quota)
        said.append(f"created group {path} with quota {_quota_text(quota)}")
    for user in DEMO_USERS:
        if user.group not in {m.group for m in _memberships(stores, user.name)}:
            stores.groups.add_member(user.group, user.name, role=user.role)
            said.append(f"added {user.name} to {user.group} as {user.role}")


def _memberships(stores: Any, name: str) -> list[Any]:
    return [m for path, _ in DEMO_GROUPS for m in stores.groups.members(path) if m.user == name]


def _quota_text(quota: dict[str, float | int]) -> str:
    return ", ".join(f"{key}={value}" for key, value in quota.items())


def _create_database_file(url: str) -> None:
    """An empty SQLite file where the facility's database will be (``afhub up`` creates
    the facility; the database commands open only one that exists)."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)


# --- the hub database: local accounts -----------------------------------------------------


def _prepare_hub_database(url: str) -> None:
    """Create the hub's tables (accounts included) as the hub does at its first start, so
    that accounts can be added before it ever ran."""
    from jupyterhub.orm import new_session_factory

    import afhub.auth.accounts  # noqa: F401 - puts NativeAuthenticator's table in the hub's

    new_session_factory(url).kw["bind"].dispose()


def _seed_accounts(settings: FacilitySettings) -> list[tuple[DemoUser, str | None]]:
    """Each demo user's account; returns ``(user, password)``, the password only when it is
    new (printed this once), else ``None`` (it is in the user's password file)."""
    from afhub.auth.accounts import add_account, list_accounts, reset_password
    from afhub.passwords import write_secret_file

    _prepare_hub_database(settings.hub_db_url)
    existing = {a.name for a in list_accounts(settings.hub_db_url)}
    out: list[tuple[DemoUser, str | None]] = []
    for user in DEMO_USERS:
        path = password_path(settings, user.name)
        password = None
        if user.name not in existing:
            password = add_account(settings.hub_db_url, user.name)
        elif not path.exists():  # an account whose password was never kept: a new one
            password = reset_password(settings.hub_db_url, user.name)
        if password is not None:
            write_secret_file(path, password)
        out.append((user, password))
    return out


# --- the users' homes: the example likelihood ---------------------------------------------

EXAMPLES_README = """\
A generated example likelihood (afhub.fitting.examples; not a published one):
BkgOnly.json is a background-only pyhf workspace, patchset.json holds one signal
patch per mass point (m1, m2), named sig_<m1>_<m2>.

Fit every point, in a notebook of your server:

    import json
    from afhub.client import FitClient, format_table
    fits = FitClient()
    job = fits.submit(json.load(open("examples/BkgOnly.json")),
                      patchset=json.load(open("examples/patchset.json")))
    fits.wait(job); print(format_table(fits.table(job)))

or from a shell with the afhub command line and a token of yours (docs/quickstart.md):

    afhub fit submit BkgOnly.json --patchset patchset.json --wait --url URL --token TOKEN
"""


def _place_examples(settings: FacilitySettings) -> list[str]:
    """Write the example likelihood into each demo user's ``examples/`` (files that exist
    are kept); returns the folders written to."""
    files = {**example_likelihood().files(), "README.txt": EXAMPLES_README}
    written = []
    for user in DEMO_USERS:
        folder = home_of(settings, user.name) / EXAMPLES_FOLDER
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        missing = {name: text for name, text in files.items() if not (folder / name).exists()}
        for name, text in missing.items():
            (folder / name).write_text(text)
        if missing:
            written.append(str(folder))
    return written


# --- the command --------------------------------------------------------------------------


def seed_demo(settings: FacilitySettings) -> int:
    """Seed the demo into the facility of ``settings``; prints what it added. 0 or 2."""
    if settings.authenticator != "local":
        return fail(
            f"the demo's accounts need local login, not {settings.authenticator!r}; "
            "set AFHUB_AUTHENTICATOR=local (the default), or start without --demo"
        )
    said: list[str] = []

    def seed_database(stores: Any) -> None:
        _seed_registry(stores, said)
        _seed_groups(stores, said)

    _create_database_file(settings.db_url)
    status = with_stores(argparse.Namespace(db_url=None), settings, seed_database)
    if status:
        return status
    try:
        accounts = _seed_accounts(settings)
    except ValueError as exc:  # AccountError, or a hub database of another version
        return fail(f"cannot add the demo's accounts: {exc}")
    said.extend(f"placed the example likelihood in {f}" for f in _place_examples(settings))
    _announce(settings, said, accounts)
    return 0


def _announce(
    settings: FacilitySettings, said: list[str], accounts: list[tuple[DemoUser, str | None]]
) -> None:
    for line in said or ["in place from an earlier start (nothing added, nothing reset)"]:
        print(f"afhub demo: {line}")
    print("afhub demo: log in as")
    for user, password in accounts:
        where = password_path(settings, user.name)
        shown = (
            f"password {password} (kept in {where}, mode 0600)"
            if password
            else f"password in {where}"
        )
        print(f"    {user.name:8} ({user.describe()}): {shown}")
    print(
        "afhub demo: simulated GPU, MIG and FPGA profiles are on the spawn form; the "
        f"example likelihood is in ~/{EXAMPLES_FOLDER}/ (docs/quickstart.md)",
        flush=True,
    )
