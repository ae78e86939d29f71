"""The contributions dashboard: what a provider's resources delivered, per period.

The numbers come from the facility API's ``contributions`` resource (aggregated in SQL),
called with the viewer's token: a provider's contacts see their provider's resources,
facility admins every provider's, anyone else the API's 403.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import dashboard_kit as kit
import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display

PERIODS = ("week", "month", "quarter", "year")
RESOURCE_COLUMNS = [
    ("resource", "Resource"),
    ("kind", "Kind"),
    ("gpu_hours", "GPU-hours"),
    ("core_hours", "Core-hours"),
    ("distinct_users", "Users"),
    ("fits", "Fits"),
    ("utilisation", "Utilisation"),
]


def app() -> None:
    """Show the dashboard: a period selector, then the report of the chosen period."""
    asked = kit.query()
    period = widgets.ToggleButtons(
        options=PERIODS, value=asked.get("period") if asked.get("period") in PERIODS else "month"
    )
    out = widgets.Output()

    def draw(_change: Any = None) -> None:
        params = {"period": period.value}
        if asked.get("provider"):
            params["provider"] = asked["provider"]
        kit.refresh(out, lambda: report_view(params))

    period.observe(draw, "value")
    display(widgets.VBox([widgets.HTML("<h2>Contributions</h2>"), period, out]))
    draw()


def report_view(params: dict[str, str]) -> widgets.Widget:
    report = kit.facility("contributions", **params)
    title = widgets.HTML(
        f"<p>{', '.join(report['providers']) or 'no provider'}: "
        f"{report['since'][:10]} to {report['until'][:10]}</p>"
    )
    if not report["resources"]:
        return widgets.VBox([title, kit.message("No resources are registered for this provider.")])
    parts: list[widgets.Widget] = [
        title,
        kit.table([_shown(r) for r in report["resources"]], RESOURCE_COLUMNS),
        kit.download("Download CSV", "contributions.csv", _csv(report["resources"]), "text/csv"),
        public_links(report["providers"], params["period"]),
    ]
    delivered = sum(r["gpu_hours"] + r["core_hours"] for r in report["resources"])
    if not delivered:
        parts.append(kit.message("No usage recorded on these resources in this period yet."))
        return widgets.VBox(parts)
    parts += [kit.figure(fig) for fig in charts(report)]
    return widgets.VBox(parts)


def public_links(providers: list[str], period: str) -> widgets.HTML:
    """A link to the public report (PDF) of each shown provider that publishes one."""
    published = {
        p["name"]
        for p in kit.facility("providers")["providers"]
        if p.get("public_report", "off") != "off"
    }
    base = kit.service_url("facility") + "api/contributions/public/"
    links = [
        f'<a href="{html.escape(base + quote(name))}/report.pdf?period={quote(period)}" '
        f'target="_blank">Public report of {html.escape(name)} (PDF)</a>'
        for name in providers
        if name in published
    ]
    return widgets.HTML(" | ".join(links))


def _csv(rows: list[dict[str, Any]]) -> bytes:
    """The resources table as CSV (the rows as the API sent them; no second query)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    share = row.get("utilisation")
    return {**row, "utilisation": None if share is None else f"{100 * share:.1f} %"}


def charts(report: dict[str, Any]) -> list[go.Figure]:
    """Hours by resource, utilisation, hours by group, top users, hours over time."""
    resources = report["resources"]
    names = [r["resource"] for r in resources]
    by_resource = go.Figure(
        [
            go.Bar(name="GPU-hours", x=names, y=[r["gpu_hours"] for r in resources]),
            go.Bar(name="Core-hours", x=names, y=[r["core_hours"] for r in resources]),
        ],
        layout={"title": "Delivered by resource", "barmode": "group", "height": 320},
    )
    used = [100 * (r["utilisation"] or 0) for r in resources]
    utilisation = go.Figure(
        [go.Bar(x=names, y=used)],
        layout={"title": "Utilisation against capacity (%)", "height": 280},
    )
    groups = _by(report["groups"], "group")
    by_group = go.Figure(
        [
            go.Bar(name=g, x=[r["resource"] for r in rows], y=[_hours(r) for r in rows])
            for g, rows in groups.items()
        ],
        layout={"title": "Hours by group (GPU + core)", "barmode": "stack", "height": 320},
    )
    top = report["top_users"]
    users = go.Figure(
        [go.Bar(x=[_hours(r) for r in top], y=[r["user"] for r in top], orientation="h")],
        layout={"title": "Top users (GPU + core hours)", "height": 320},
    )
    days = _by(report["timeline"], "resource")
    per = "day" if report["bucket_days"] == 1 else f"{report['bucket_days']} days"
    timeline = go.Figure(
        [
            go.Scatter(
                name=name,
                x=[datetime.fromtimestamp(r["start"], UTC).date() for r in rows],
                y=[_hours(r) for r in rows],
                mode="lines",
            )
            for name, rows in days.items()
        ],
        layout={"title": f"Hours per {per}", "height": 320},
    )
    return [by_resource, utilisation, by_group, users, timeline]


def _hours(row: dict[str, Any]) -> float:
    return row["gpu_hours"] + row["core_hours"]


def _by(rows: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row[key], []).append(row)
    return grouped
