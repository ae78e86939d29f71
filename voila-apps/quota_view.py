"""The quota dashboard for group admins: their subtree, usage against limits now, and the
usage of the last months against the current limits.

Everything comes from the facility API with the viewer's token: a group the viewer may not
read is the API's 403, never data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dashboard_kit as kit
import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display

#: the limits shown, as the API names them, with their headings
LIMITS = [
    ("gpu_hours", "GPU-hours"),
    ("cpu_core_hours", "Core-hours"),
    ("max_servers", "Servers"),
    ("max_gpus", "GPUs"),
    ("max_dask_cores", "Dask cores"),
]
#: months of history shown
MONTHS = 6
#: at most this many groups of a subtree are shown (one API call each)
MAX_GROUPS = 50


def app() -> None:
    me = _me()
    if me is None:
        return
    groups = administered(me)
    if not groups:
        display(
            kit.message(
                "The quota dashboard shows the groups you administer; you are admin of no group."
            )
        )
        return
    asked = kit.query().get("group")
    choice = widgets.Dropdown(options=groups, value=asked if asked in groups else groups[0])
    out = widgets.Output()
    choice.observe(lambda _c: kit.refresh(out, lambda: subtree_view(choice.value)), "value")
    title = widgets.HTML("<h2>Quota</h2>")
    display(widgets.VBox([title, widgets.HBox([widgets.Label("Group"), choice]), out]))
    kit.refresh(out, lambda: subtree_view(choice.value))


def _me() -> dict[str, Any] | None:
    try:
        return kit.facility("users/me")
    except kit.ServiceError as exc:
        display(kit.error(exc))
        return None


def administered(me: dict[str, Any]) -> list[str]:
    """Groups where the viewer is admin (facility admins: every top-level group)."""
    if me.get("is_facility_admin"):
        return [g["path"] for g in kit.facility("groups")["groups"] if "/" not in g["path"]]
    return sorted(path for path, role in (me.get("groups") or {}).items() if role == "admin")


def subtree_view(root: str) -> widgets.Widget:
    paths = [
        g["path"]
        for g in kit.facility("groups")["groups"]
        if g["path"] == root or g["path"].startswith(root + "/")
    ][:MAX_GROUPS]
    rows = [limit_row(path) for path in paths]
    parts: list[widgets.Widget] = [
        kit.table(rows, [("group", "Group"), *[(k, t) for k, t in LIMITS], ("resets", "Resets")])
    ]
    history = monthly_usage(root)
    if not any(m["gpu_hours"] or m["cpu_core_hours"] for m in history):
        parts.append(kit.message(f"No usage recorded for {root} in the last {MONTHS} months."))
    parts.append(kit.figure(now_figure(rows)))
    parts.append(kit.figure(history_figure(root, history, rows[0] if rows else {})))
    return widgets.VBox(parts)


def limit_row(path: str) -> dict[str, Any]:
    """``used / limit`` of each limit of ``path`` now."""
    node = kit.facility(f"groups/{path}/-/quota")["chain"][-1]
    row: dict[str, Any] = {"group": path, "resets": (node.get("resets_at") or "-")[:10]}
    for key, _title in LIMITS:
        state = node["limits"][key]
        used, limit = state.get("used") or 0, state.get("limit")
        row[key] = f"{used:,.1f} / {'no limit' if limit is None else f'{limit:,.1f}'}"
        row[f"{key}_used"], row[f"{key}_limit"] = used, limit
    return row


def monthly_usage(path: str) -> list[dict[str, Any]]:
    """GPU-hours and core-hours of ``path``'s subtree in each of the last months (each
    month summed by the API)."""
    now = datetime.now(UTC)
    starts = []
    year, month = now.year, now.month
    for _ in range(MONTHS):
        starts.append(datetime(year, month, 1, tzinfo=UTC))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    starts.reverse()
    months = []
    for i, start in enumerate(starts):
        until = starts[i + 1] if i + 1 < len(starts) else now
        usage = kit.facility(
            f"groups/{path}/-/usage", since=start.isoformat(), until=until.isoformat()
        )
        months.append(
            {
                "month": start.strftime("%Y-%m"),
                "gpu_hours": usage["gpu_hours"],
                "cpu_core_hours": usage["cpu_core_hours"],
            }
        )
    return months


def now_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Share of each group's GPU-hour and core-hour budgets used this period."""
    groups = [r["group"] for r in rows]
    bars = []
    for key, title in LIMITS[:2]:
        share = [
            100 * r[f"{key}_used"] / r[f"{key}_limit"] if r[f"{key}_limit"] else None for r in rows
        ]
        bars.append(go.Bar(name=title, x=groups, y=share))
    return go.Figure(
        bars, layout={"title": "Budget used this period (%)", "barmode": "group", "height": 320}
    )


def history_figure(root: str, months: list[dict[str, Any]], limits: dict[str, Any]) -> go.Figure:
    x = [m["month"] for m in months]
    traces = [
        go.Scatter(name="GPU-hours", x=x, y=[m["gpu_hours"] for m in months]),
        go.Scatter(name="Core-hours", x=x, y=[m["cpu_core_hours"] for m in months]),
    ]
    for key, title in LIMITS[:2]:
        if limits.get(f"{key}_limit") is not None:
            traces.append(
                go.Scatter(
                    name=f"{title} limit",
                    x=x,
                    y=[limits[f"{key}_limit"]] * len(x),
                    line={"dash": "dash"},
                )
            )
    return go.Figure(traces, layout={"title": f"{root}: usage by month", "height": 320})
