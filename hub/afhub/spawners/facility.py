"""The facility spawner base: stores, charging, the charge option and the order of admission.

:class:`FacilitySpawner` sits in front of a spawner class (the profiles mixin builds on
it). Its :meth:`~FacilitySpawner.start` admits a server in one order, top to bottom:

1. **profile**: :meth:`~FacilitySpawner.prepare_start` checks what was asked for (HTTP 4xx);
2. **quota**: the ledger admits the server (quota decision and a ``pending`` ledger
   interval, atomically, see :meth:`afhub.stores.ledger.LedgerStore.admit`); a refusal is
   an HTTP 403 naming the group, the limit, used/limit and when it resets;
3. **devices**: its accelerators are claimed (:mod:`afhub.spawners.devices`, 409 when
   none is free; the interval is then failed);
4. **interval**: the server starts, and the interval turns ``running`` when it is ready.

The interval is ``failed`` (charged nothing) when the spawn fails, and closed when the
server stops. Its id is part of the spawner's state, so a hub restart keeps charging the
same interval.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Bool, Float, HasTraits, Unicode, default

from afhub.groups.names import InvalidGroupName, validate_path
from afhub.quotas.decisions import Refusal
from afhub.quotas.limits import Charge, ChargeKind
from afhub.quotas.refusals import explain
from afhub.quotas.remaining import Remaining, remaining
from afhub.registry.model import Resource
from afhub.spawners import devices
from afhub.spawners.form import (
    CHARGE_OPTION,
    GroupChoice,
    charge_select,
    refusal_error,
    spawn_error,
)
from afhub.stores.database import default_url
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores
from afhub.stores.ledger import QuotaExceeded

_stores_lock = threading.Lock()
_stores: dict[str, Stores] = {}


def stores_for(url: str) -> Stores:
    """One :class:`Stores` per database URL and process (the hub's connection pool)."""
    with _stores_lock:
        if url not in _stores:
            _stores[url] = Stores.open(url, migrate=False)
        return _stores[url]


def parse_charge_option(value: object) -> str | None:
    """The ``charge_to`` user option: a group path, or None for the default group.

    Checked with the group-name rules (:func:`afhub.groups.names.validate_path`): a value
    that cannot name a group (``..``, ``//``, a list) is an HTTP 400 that says why."""
    if value in (None, ""):
        return None
    try:
        return validate_path(value)
    except InvalidGroupName as exc:
        raise spawn_error(
            400, f"{CHARGE_OPTION} must be a group path such as atlas/higgs: {exc}"
        ) from None


class FacilitySpawner(HasTraits):
    """Stores, admission, ledger charging and device claims for a spawner (put it first
    in the bases)."""

    charging = Bool(
        True,
        help="Check group quotas at spawn and charge servers to a group in the ledger.",
    ).tag(config=True)

    facility_db_url = Unicode(
        help="SQLAlchemy URL of afhub's facility database (groups, quotas, ledger). "
        "Default: ``$AFHUB_DB_URL`` or SQLite in ``$AFHUB_HOME``.",
    ).tag(config=True)

    @default("facility_db_url")
    def _default_facility_db_url(self) -> str:
        return default_url()

    charged_cpu_cores = Float(
        1.0,
        help="CPU cores a server is charged for when neither a profile nor ``cpu_limit`` "
        "says (core-hours accrue at this rate while it runs).",
    ).tag(config=True)

    interval_id: int | None = None
    _stopping_live_server = False
    _mark_running_task: asyncio.Task | None = None
    _mark_in_flight = False
    #: the accelerator slots the server holds (claimed after admission)
    _afhub_slots: tuple[int, ...] = ()
    #: while a form is built: each group's room, read once (:meth:`quota_room`)
    _rooms_memo: dict[str | None, Remaining | None] | None = None

    # -- what is charged --

    @property
    def stores(self) -> Stores:
        return stores_for(self.facility_db_url)

    def server_charge(self) -> Charge:
        """What this server holds while it runs (the profiles mixin charges its profile)."""
        cores = self.cpu_limit or self.cpu_guarantee or self.charged_cpu_cores
        return Charge(kind=ChargeKind.SERVER, cpu_cores=float(cores), gpus=0, resource="local")

    def charge_group_option(self) -> str | None:
        return parse_charge_option((self.user_options or {}).get(CHARGE_OPTION))

    # -- spawn form: the "charge to" choice --

    def quota_room(self, group: str | None = None) -> Remaining | None:
        """What the quota of ``group`` (default: the user's default group) leaves now;
        ``None`` without charging or when the user has no group to charge."""
        if not self.charging:
            return None
        memo = self._rooms_memo
        if memo is not None and group in memo:
            return memo[group]
        stores = self.stores
        try:
            path = stores.groups.resolve_charge_group(self.user.name, group)
            room = remaining(stores.ledger.status(path))
        except (StoreError, ValueError):  # not a member, no such group: admission says so
            room = None
        if memo is not None:
            memo[group] = room
        return room

    def charge_form_html(self, cannot_pay: dict[str, list[str]] | None = None) -> str:
        """The "Charge to group" select (:func:`afhub.spawners.form.charge_select`) with
        what each group's quota leaves, default group first; the previous choice kept, else
        the first group with room; nothing when there is no choice to make (then the
        server starts at once).

        ``cannot_pay`` maps a group to the offered profiles it may not pay for."""
        roles = self.stores.groups.roles_of(self.user.name)
        if len(roles) < 2:
            return ""
        try:
            default_group = self.stores.groups.resolve_charge_group(self.user.name)
        except StoreError:
            default_group = None
        paths = sorted(roles, key=lambda p: (p != default_group, p))
        choices = [GroupChoice(path, self.quota_room(path)) for path in paths]
        return charge_select(choices, (self.user_options or {}).get(CHARGE_OPTION), cannot_pay)

    # -- a refusal in plain words --

    def may_pay(self, group: str) -> bool:  # noqa: ARG002 (the profiles mixin asks the resource)
        """Whether ``group`` may pay for what was asked (any group here)."""
        return True

    def group_admins(self, group: str) -> list[str]:
        """Whom to ask about ``group``'s quota (:meth:`QuotaStore.admins_to_ask`)."""
        try:
            return self.stores.quotas.admins_to_ask(group)
        except StoreError:
            return []

    def groups_with_room(self, charge: Charge, refused: str | None) -> list[str]:
        """The user's groups other than ``refused`` that would admit ``charge`` now."""
        ledger = self.stores.ledger
        found = []
        for path in sorted(self.stores.groups.roles_of(self.user.name)):
            if path == refused or not self.may_pay(path):
                continue
            try:
                if ledger.preview(user=self.user.name, charge=charge, group=path).allowed:
                    found.append(path)
            except StoreError:
                continue
        return found

    def refusal(self, refusal: Refusal, charge: Charge, charged: str | None) -> web.HTTPError:
        """HTTP 403 with ``refusal`` in plain words: the groups with room, the admins."""
        advice = explain(
            refusal,
            admins=self.group_admins(refusal.group),
            alternatives=self.groups_with_room(charge, charged or refusal.group),
        )
        self.log.warning("Refused spawn for %s: %s", self.user.name, refusal.message)
        return refusal_error(advice)

    @default("options_form")
    def _default_options_form(self):
        def form(spawner) -> str:
            return spawner.charge_form_html() if spawner.charging else ""

        return form

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, object]:
        options: dict[str, object] = {}
        value = formdata.get(CHARGE_OPTION, [""])[0]
        if value:
            options[CHARGE_OPTION] = value
        return options

    # -- life cycle --

    def _admit(self) -> int:
        charge, group = self.server_charge(), self.charge_group_option()
        try:
            admission = self.stores.ledger.admit(
                user=self.user.name, charge=charge, group=group, server_name=self.name
            )
        except QuotaExceeded as exc:
            raise self.refusal(exc.decision.refusals[0], charge, group) from None
        except StoreError as exc:
            raise spawn_error(exc.status, str(exc)) from None
        self.log.info(
            "Admitted %s's server %r charged to %s (ledger interval %s)",
            self.user.name,
            self.name,
            admission.group,
            admission.interval_id,
        )
        return admission.interval_id

    async def prepare_start(self) -> None:
        """Before admission: check what was asked for (a subclass raises HTTP 4xx)."""

    def claimed_devices(self) -> tuple[Resource | None, int]:
        """The resource whose accelerators the server holds, and how many (none here)."""
        return None, 0

    async def claim_resources(self, interval_id: int | None) -> None:
        """After admission, before the server starts: hold its accelerators (HTTP 409 when
        none is free)."""
        resource, count = self.claimed_devices()
        self._afhub_slots = await asyncio.to_thread(
            devices.claim,
            self.stores,
            resource,
            count,
            user=self.user.name,
            server_name=self.name,
            interval_id=interval_id,
            log=self.log,
        )

    async def release_resources(self) -> None:
        """Give back what :meth:`claim_resources` held (on stop, death or failure)."""
        self._afhub_slots = ()
        await asyncio.to_thread(
            devices.release, self.stores, user=self.user.name, server_name=self.name
        )

    async def start(self):
        """Admission in order: profile -> quota -> devices -> interval (module docstring)."""
        await self.prepare_start()
        self.interval_id = await asyncio.to_thread(self._admit) if self.charging else None
        try:
            await self.claim_resources(self.interval_id)
            result = await super().start()
        except BaseException:
            if self.interval_id is not None:
                await asyncio.to_thread(self.stores.ledger.fail, self.interval_id, "spawn failed")
            self.interval_id = None
            await self.release_resources()
            raise
        if self.interval_id is not None:
            # kept, so that a stop settles it first: a server stopped moments after it came
            # up must still be marked running (and closed), not failed as if it never started
            self._mark_running_task = asyncio.ensure_future(
                self._mark_running_when_ready(self.interval_id)
            )
        return result

    async def _mark_running_when_ready(self, interval_id: int) -> None:
        """Usage accrues from the moment the hub sees the server ready.

        The hub's own future for this spawn (start, wait until up, add to the proxy) is
        awaited when there is one, so the mark starts the instant the spawn succeeds, before
        the hub answers the request that started it; otherwise ``pending`` is polled.
        """
        spawn = self._spawn_future
        try:
            if spawn is not None:
                await asyncio.shield(spawn)  # never cancel the hub's future with this task
            else:
                while self.pending == "spawn" and self.interval_id == interval_id:
                    await asyncio.sleep(0.2)
        # the hub's spawn future fails with whatever the spawn raised; the stop that follows
        # fails the interval
        except Exception:  # noqa: BLE001
            return
        if self.interval_id != interval_id or (spawn is None and not self.ready):
            return
        self._mark_in_flight = True
        try:
            await asyncio.to_thread(self.stores.ledger.mark_running, interval_id, datetime.now(UTC))
        except Exception:  # a stop must never fail on it; the close still settles the row
            self.log.exception("ledger interval %s not marked running", interval_id)
        finally:
            self._mark_in_flight = False

    async def stop(self, now: bool = False):
        self._stopping_live_server = True
        return await super().stop(now=now)

    async def run_post_stop_hook(self):
        """Close the ledger interval whenever the hub finishes stopping the server.

        The hub runs this on every stop, also when the server died by itself (then it does
        not call :meth:`stop`). A server the hub stopped is charged up to now; one that
        died by itself (found dead by a poll, or at hub start after a crash) is charged up
        to its last checkpoint, so a crash never charges the time nothing ran. A pending
        interval (a spawn that never became ready) is marked failed and charged nothing.
        """
        stopped_by_hub, self._stopping_live_server = self._stopping_live_server, False
        # a mark not begun yet sees the interval gone and ends; one in flight lands first
        interval_id, self.interval_id = self.interval_id, None
        marking, self._mark_running_task = self._mark_running_task, None
        if marking is not None and not marking.done():
            if self._mark_in_flight:
                await marking  # the mark lands before the close; it logs its own failure
            else:
                marking.cancel()  # the spawn never succeeded (this stop may be part of it)
        await self.release_resources()
        if interval_id is not None:
            await asyncio.to_thread(self._close, interval_id, stopped_by_hub)
        return await maybe_future(super().run_post_stop_hook())

    def _close(self, interval_id: int, stopped_by_hub: bool) -> None:
        ledger = self.stores.ledger
        if stopped_by_hub:
            ledger.close(interval_id, None, "stopped")
        else:
            last = ledger.get(interval_id).checkpoint
            ledger.close(interval_id, last, "died; charged up to its last checkpoint")

    # -- state kept across hub restarts --

    def get_state(self) -> dict:
        state = super().get_state()
        if self.interval_id is not None:
            state["afhub_interval_id"] = self.interval_id
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.interval_id = state.get("afhub_interval_id")

    # clear_state is left alone: LocalProcessSpawner.poll clears state when the process
    # is gone, before the hub runs the post-stop hook that closes the interval.
