"""The idle culler: a hub-managed service that stops idle servers, sooner for GPU and FPGA.

Run by the hub as ``python -m afhub.services.culler`` (no HTTP endpoint). Every
``AFHUB_CULL_EVERY`` seconds it runs one round of jupyterhub-idle-culler's ``cull_idle``
(which lists the users with ready servers through the hub's REST API, skips pending
servers, and stops the chosen ones with ``DELETE /users/{name}/servers/{server}``) with an
afhub *cull arbiter* that decides per server with :func:`afhub.culling.decide`:

- the server's kind comes from its open ledger interval (its ``resource``, the registry
  resource or profile it runs on) mapped through the resource registry; a server with no
  interval falls back to its ``profile`` user option; unknown resources are ``cpu``;
- the kind's idle timeout (``AFHUB_CULL_TIMEOUT_CPU``/``_GPU``/``_FPGA``) and the maximum
  age (``AFHUB_CULL_MAX_AGE``) decide.

Servers are stopped through the hub, so the spawner's post-stop hook closes their ledger
interval (charged up to the stop) exactly as for a stop by the user. Named servers are
stopped, not deleted: the user can start them again. Each cull is logged with the user,
the server, its kind and how long it was idle. The service runs until the hub that started
it is gone or SIGTERM/SIGINT ask it to stop (the service kit's
:func:`~afhub.services.kit.lifecycle.run_until_stopped`: at once, mid-round too).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from jupyterhub_idle_culler import cull_idle, parse_date
from tornado.ioloop import IOLoop

from afhub.culling import (
    CullPolicy,
    ServerActivity,
    decide,
    kind_of,
    server_kinds,
)
from afhub.services.kit.lifecycle import ParentWatch, run_until_stopped
from afhub.stores.facade import Stores

log = logging.getLogger("afhub.culler")

#: the hub API scopes the culler needs (and no more): list users (names), read their servers
#: (activity, start, user options), stop servers. It never culls users, so it reads no
#: user-level activity and cannot delete users.
CULLER_SCOPES = ["list:users", "read:servers", "delete:servers"]


def policy_from_settings(settings: Any) -> CullPolicy:
    """The culling policy of a :class:`afhub.settings.FacilitySettings`."""
    return CullPolicy(
        timeouts={
            "cpu": settings.cull_timeout_cpu,
            "gpu": settings.cull_timeout_gpu,
            "fpga": settings.cull_timeout_fpga,
        },
        max_age=settings.cull_max_age,
    )


def registry_kinds(stores: Stores) -> dict[str, str]:
    """``resource name -> kind`` from the facility's resource registry (empty when the
    facility has no registry store or it cannot be read: every server is then ``cpu``)."""
    registry_store = getattr(stores, "registry", None)
    if registry_store is None:
        return {}
    try:
        registry = registry_store.load()
    except Exception:  # a broken registry must not stop culling CPU servers
        log.exception("could not read the resource registry; every server counts as cpu")
        return {}
    return {name: resource.kind for name, resource in registry.resources.items()}


def current_kinds(stores: Stores) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """``(user, server name) -> kind`` of the servers with an open ledger interval, and the
    registry's ``resource -> kind``."""
    kinds = registry_kinds(stores)
    open_servers = [
        (i.user, i.server_name, i.resource) for i in stores.ledger.open_intervals("server")
    ]
    return server_kinds(open_servers, kinds), kinds


def _date(value: object) -> datetime | None:
    return parse_date(value) if isinstance(value, str) and value else None


def server_activity(
    server: Mapping[str, Any],
    by_server: Mapping[tuple[str, str], str],
    resource_kinds: Mapping[str, str],
) -> ServerActivity:
    """A server model of the hub's REST API as the pure decision sees it."""
    user, _, name = str(server.get("full_name", "")).rpartition("/")
    kind = by_server.get((user, name))
    if kind is None:
        profile = (server.get("user_options") or {}).get("profile")
        kind = kind_of(profile if isinstance(profile, str) else None, resource_kinds)
    return ServerActivity(
        user=user,
        server_name=name,
        kind=kind,
        last_activity=_date(server.get("last_activity")),
        started=_date(server.get("started")),
    )


def make_arbiter(
    policy: CullPolicy,
    by_server: Mapping[tuple[str, str], str],
    resource_kinds: Mapping[str, str],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    culled: list[ServerActivity] | None = None,
) -> Callable[..., bool]:
    """A ``cull_arbiter`` for jupyterhub-idle-culler: afhub's per-kind decision replaces
    its single timeout (its ``inactive``/``inactive_limit`` are not used)."""

    def arbiter(*, server: Mapping[str, Any], **_ignored: Any) -> bool:
        activity = server_activity(server, by_server, resource_kinds)
        decision = decide(activity, policy, now())
        if decision.cull:
            log.info("Culling %s", decision.describe(activity))
            if culled is not None:
                culled.append(activity)
        return decision.cull

    return arbiter


async def cull_round(
    stores: Stores, policy: CullPolicy, api_url: str, token: str
) -> list[ServerActivity]:
    """One round: the servers chosen for culling (each stopped through the hub API)."""
    by_server, resource_kinds = await asyncio.to_thread(current_kinds, stores)
    culled: list[ServerActivity] = []
    await cull_idle(
        url=api_url.rstrip("/"),
        api_token=token,
        inactive_limit=int(policy.timeout_for("cpu")),  # unused: the arbiter decides
        logger=log,
        cull_users=False,
        remove_named_servers=False,  # stopped, kept: the user can start them again
        max_age=0,  # the arbiter applies afhub's maximum age
        cull_default_servers=True,
        cull_named_servers=True,
        cull_arbiter=make_arbiter(policy, by_server, resource_kinds, culled=culled),
    )
    return culled


async def run(stores: Stores, policy: CullPolicy, every: float, api_url: str, token: str):
    hub_process = ParentWatch()
    log.info(
        "Culling servers idle for %s (seconds; 0: never), maximum age %s s, every %s s",
        ", ".join(f"{kind} {seconds:g}" for kind, seconds in policy.timeouts.items()),
        policy.max_age,
        every,
    )
    while not hub_process.gone:
        try:
            await cull_round(stores, policy, api_url, token)
        except Exception:  # the hub may be starting or busy: try again next round
            log.exception("culling round failed")
        await hub_process.wait(every)
    log.info("The hub is gone; the culler stops")


def main() -> None:
    from traitlets.config import Config

    from afhub.settings import FacilitySettings

    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    # the hub passes the culling settings (already checked) as AFHUB_CULL_*; only the ones
    # read here are evaluated
    settings = FacilitySettings(config=Config())
    stores = Stores.open(settings.db_url, migrate=False)
    IOLoop.current().add_callback(
        run,
        stores,
        policy_from_settings(settings),
        settings.cull_every,
        os.environ["JUPYTERHUB_API_URL"],
        os.environ["JUPYTERHUB_API_TOKEN"],
    )
    run_until_stopped("the culler", on_stop=stores.close)


if __name__ == "__main__":
    main()
