"""The gateway's quota refusals in plain words, as the spawn form and the CLI say them
(:func:`afhub.quotas.refusals.explain`, ``what="Dask cluster"``): a new cluster whose
scheduler does not fit, and a scale request capped by the group's limits. The facts the
sentence names (the group's admins, the person's other groups with room) are looked up
here, only when something is refused. Blocking: call in a thread."""

from __future__ import annotations

from afhub.dask.policy import scale_notice
from afhub.quotas.decisions import Decision
from afhub.quotas.limits import Charge
from afhub.quotas.refusals import after_granting, explain
from afhub.services.gateway.options import user_groups
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores

WHAT = "Dask cluster"


def nearest_admins(stores: Stores, group: str) -> list[str]:
    """Whom to ask about ``group``'s quota (:meth:`QuotaStore.admins_to_ask`); [] when
    the group cannot be read."""
    try:
        return stores.quotas.admins_to_ask(group)
    except StoreError:
        return []


def groups_with_room(stores: Stores, user: str, charge: Charge, refused: str) -> list[str]:
    """``user``'s groups other than ``refused`` that would admit ``charge`` now (what
    ``charge_to`` may name instead)."""
    found = []
    for path in user_groups(stores, user)[0]:
        if path == refused:
            continue
        try:
            if stores.ledger.preview(user=user, charge=charge, group=path).allowed:
                found.append(path)
        except StoreError:
            continue
    return found


def cluster_refused(
    stores: Stores, user: str, charge: Charge, refused: StoreError | Decision
) -> str:
    """Why a new cluster (its scheduler's ``charge``) was refused, and what to do: the
    quota's decision (``QuotaExceeded`` carries one) in plain words, any other refusal of
    the store as it says it."""
    decision = getattr(refused, "decision", refused)
    if not isinstance(decision, Decision) or decision.allowed:
        return f"no cluster started: {refused}"
    refusal = decision.refusals[0]
    return explain(
        refusal,
        what=WHAT,
        admins=nearest_admins(stores, refusal.group),
        alternatives=groups_with_room(stores, user, charge, refusal.group),
    ).text


def scale_capped(
    stores: Stores, requested: int, granted: int, why: Decision | str, per_worker: Charge, fit: int
) -> str:
    """What a person reads when a scale request of ``requested`` workers runs ``granted``:
    ``why`` is the quota's decision for one worker more than the ``fit`` that fit (said as
    it reads once those run), or a reason as text (no free GPU)."""
    if isinstance(why, str):
        return scale_notice(requested, granted, why)
    refusal = after_granting(why.refusals[0], per_worker, fit)
    advice = explain(
        refusal, what=WHAT, admins=nearest_admins(stores, refusal.group), opening=False
    )
    return scale_notice(requested, granted, advice.text)
