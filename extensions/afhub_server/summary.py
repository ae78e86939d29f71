"""What a person's server says about their quota: built from the facility API's answers.

Pure functions over the JSON of ``users/me`` and ``groups/<path>/-/quota``; no I/O. The
JupyterLab notice (``afhub_lab``) shows :func:`quota_summary`'s ``headline`` and, when a
budget has run out, its ``stop`` with the time the server will be stopped.
"""

from __future__ import annotations

from typing import Any

from afhub.quotas.limits import LimitName

_KNOWN = {name.value: name for name in LimitName}


def _limit_left(group: str, resets_at: str | None, name: str, state: dict) -> dict | None:
    limit, used = state.get("limit"), state.get("used")
    if limit is None:
        return None
    used = float(used or 0)
    left = max(float(limit) - used, 0.0)
    known = _KNOWN.get(name)
    return {
        "group": group,
        "limit": name,
        "label": known.label if known else name,
        "limit_value": limit,
        "used": round(used, 4),
        "left": round(left, 4),
        "fraction_left": round(left / float(limit), 4) if float(limit) > 0 else 0.0,
        "resets_at": resets_at if known and known.is_budget else None,
    }


def limits_left(chain: list[dict]) -> list[dict]:
    """Every limit set on the charged group or a group above it that the person may read,
    with what is left; the scarcest first."""
    rows = []
    for node in chain:
        for name, state in (node.get("limits") or {}).items():
            row = _limit_left(node["group"], node.get("resets_at"), name, state)
            if row is not None:
                rows.append(row)
    return sorted(rows, key=lambda r: (r["fraction_left"], r["group"], r["limit"]))


def _number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def headline(group: str, scarcest: dict | None) -> str:
    """One line for the status bar: the group charged and its scarcest limit."""
    if scarcest is None:
        return f"afhub: charged to {group}, no limit set"
    where = "" if scarcest["group"] == group else f" (in {scarcest['group']})"
    return (
        f"afhub: {group}: {_number(scarcest['left'])} of {_number(scarcest['limit_value'])} "
        f"{scarcest['label']} left{where}"
    )


def stop_for_server(warnings: list[dict], server_name: str) -> dict | None:
    """The pending stop of this server, from ``users/me``'s warnings (None: none)."""
    for warning in warnings:
        if warning.get("kind") == "server" and (warning.get("server_name") or "") == server_name:
            return {
                "group": warning.get("group"),
                "stops_at": warning.get("stops_at"),
                "message": warning.get("message"),
            }
    return None


def quota_summary(me: dict, quota: dict, charged_group: str, server_name: str) -> dict[str, Any]:
    """The answer of ``/afhub/api/quota``: who, the group charged, what is left, any stop."""
    left = limits_left(quota.get("chain") or [])
    warnings = list(me.get("warnings") or [])
    return {
        "user": me.get("name"),
        "server_name": server_name,
        "charged_group": charged_group,
        "default_group": me.get("default_group"),
        "groups": me.get("groups") or {},
        "limits": left,
        "headline": headline(charged_group, left[0] if left else None),
        "stop": stop_for_server(warnings, server_name),
        "warnings": warnings,
    }
