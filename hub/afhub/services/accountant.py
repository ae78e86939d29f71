"""The accountant: a hub-managed service that keeps the ledger and the hub in step.

Run by the hub as ``python -m afhub.services.accountant`` (no HTTP endpoint). At start it

- mirrors afhub's groups into JupyterHub groups (afhub's database is the source of truth:
  hub groups and memberships that afhub does not have are removed), and
- reconciles the ledger with the servers the hub sees running
  (:meth:`afhub.stores.ledger.LedgerStore.reconcile`: after a hub crash, intervals of
  servers that died are closed at their last checkpoint, so a crash loses at most one
  checkpoint interval of usage).

Then, every ``AFHUB_CHECKPOINT_INTERVAL`` seconds, it checkpoints running intervals, warns
servers whose group (or an ancestor) has spent a budget, stops them once
``AFHUB_GRACE_PERIOD`` seconds have passed since the warning, and mirrors groups again.
It runs until the hub that started it is gone or SIGTERM/SIGINT ask it to stop (the service
kit's :func:`~afhub.services.kit.lifecycle.run_until_stopped`: it leaves at once, mid-round
too, its stores closed).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta

from tornado.ioloop import IOLoop

from afhub.groups.mirror import MirrorPlan, hub_edits, plan_mirror
from afhub.quotas.decisions import EnforcementAction
from afhub.services.hub_client import HubAPIError, HubClient
from afhub.services.kit.lifecycle import ParentWatch, run_until_stopped
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores

log = logging.getLogger("afhub.accountant")


class Mirrored:
    """What the accountant mirrored into the hub last (``None`` before the first round:
    then afhub wins, edits made while no accountant ran are not known)."""

    def __init__(self) -> None:
        self.groups: dict[str, set[str]] | None = None


async def mirror_groups(stores: Stores, hub: HubClient, last: Mirrored | None = None) -> MirrorPlan:
    """Make JupyterHub's groups equal afhub's (afhub is the source of truth: hub groups it
    does not have are deleted). Members who never logged in are not hub users yet; they
    are added after their first login. With ``last`` (what the previous round mirrored),
    edits made in the hub since then are applied to afhub first (:func:`apply_hub_edits`);
    ``last`` is updated to what this round mirrored."""
    hub_groups = await hub.groups()
    membership = await asyncio.to_thread(stores.groups.membership_map)
    if last is not None and last.groups is not None:
        edits = hub_edits(last.groups, hub_groups, membership)
        if not edits.empty:
            await apply_hub_edits(stores, edits)
            membership = await asyncio.to_thread(stores.groups.membership_map)
    hub_users = {u["name"] for u in await hub.users()}
    wanted = {path: set(members) & hub_users for path, members in membership.items()}
    if last is not None:
        last.groups = wanted
    plan = plan_mirror(wanted, hub_groups, managed=hub_groups)
    for name in plan.create_groups:
        await hub.create_group(name)
    for name, users in plan.add_members.items():
        await hub.add_group_users(name, users)
    for name, users in plan.remove_members.items():
        await hub.remove_group_users(name, users)
    for name in plan.delete_groups:
        await hub.delete_group(name)
    return plan


async def apply_hub_edits(stores: Stores, edits: MirrorPlan) -> None:
    """Apply edits made in the hub's Manage Groups to afhub (a hub admin made them; afhub's
    facility rules still hold: a group whose parent does not exist, or one that is busy,
    is refused and the mirror puts the hub back, with the reason in the log)."""
    steps = [
        *[(stores.groups.create, (path,), {}) for path in edits.create_groups],
        *[
            (stores.groups.add_member, (path, user), {"source": "hub"})
            for path, users in edits.add_members.items()
            for user in users
        ],
        *[
            (stores.groups.remove_member, (path, user), {})
            for path, users in edits.remove_members.items()
            for user in users
        ],
        *[(stores.groups.delete, (path,), {}) for path in edits.delete_groups],
    ]
    for step, args, kwargs in steps:
        try:
            await asyncio.to_thread(step, *args, **kwargs)
        except (StoreError, ValueError) as exc:
            log.warning(
                "An edit in the hub's groups was not applied (%s%s): %s", step.__name__, args, exc
            )
        else:
            log.info("Applied an edit in the hub's groups to afhub: %s%s", step.__name__, args)


async def enforce(stores: Stores, hub: HubClient, grace: timedelta) -> list[str]:
    """Checkpoint, then warn or stop what is over budget (the ledger's enforcement round);
    returns what was done."""
    now = datetime.now(UTC)
    await asyncio.to_thread(stores.ledger.checkpoint, now)
    notices = await asyncio.to_thread(stores.ledger.enforcement_round, grace, now)
    done: list[str] = []
    for notice in notices:
        interval = notice.interval
        who = f"{interval.kind} {interval.server_name or '(default)'} of {interval.user}"
        if notice.action == EnforcementAction.WARN:
            log.warning("Over budget, stopping in %s: %s (%s)", grace, who, notice.reason)
            done.append(f"warned {who}")
        elif interval.kind == "server":
            log.warning("Stopping %s: %s", who, notice.reason)
            try:
                await hub.stop_server(interval.user, interval.server_name)
            except HubAPIError as exc:
                log.error("Could not stop %s: %s", who, exc)
                continue
            done.append(f"stopped {who}")
    return done


async def wait_for_hub(hub: HubClient, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await hub.users()
            return
        except (HubAPIError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run(stores: Stores, hub: HubClient, interval: float, grace: timedelta) -> None:
    hub_process = ParentWatch()
    log.info("Accounting every %s s (grace %s); waiting for the hub", interval, grace)
    try:
        await wait_for_hub(hub)
    except (HubAPIError, OSError):
        log.exception("The hub does not answer; the accountant stops")
        IOLoop.current().stop()
        return
    report = await asyncio.to_thread(stores.ledger.reconcile, await hub.running_servers())
    log.info("Reconciled the ledger with the hub: %s", report)
    mirrored = Mirrored()  # what the last round mirrored (edits in the hub since then)
    while not hub_process.gone:
        for step in (
            lambda: mirror_groups(stores, hub, mirrored),
            lambda: enforce(stores, hub, grace),
        ):
            try:
                await step()
            except Exception:  # keep accounting whatever one round met
                log.exception("accountant round failed")
        # a hub that died is noticed within a second
        await hub_process.wait(interval)
    log.info("The hub is gone; the accountant stops")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    interval = float(os.environ.get("AFHUB_CHECKPOINT_INTERVAL", "60"))
    grace = timedelta(seconds=float(os.environ.get("AFHUB_GRACE_PERIOD", "600")))
    stores = Stores.open()
    IOLoop.current().add_callback(run, stores, HubClient(), interval, grace)
    run_until_stopped("the accountant", on_stop=stores.close)


if __name__ == "__main__":
    main()
