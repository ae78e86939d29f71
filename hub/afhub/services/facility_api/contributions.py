"""``/api/contributions``: what a provider's resources delivered in a period.

A provider's people (the ``contacts`` of the provider in the registry, by user name or
email) see their provider's resources; facility admins see every provider's; anyone else
gets 403. The aggregation is :class:`afhub.stores.contributions.ContributionStore` (SQL);
this module picks the resources, the period and the capacity, and answers JSON or CSV.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError
from afhub.stores.contributions import ContributionStore, Period

#: the period selector's choices: the last N days up to now
PERIODS = {"week": 7, "month": 30, "quarter": 91, "year": 365}
#: the longest period one request may cover
MAX_DAYS = 3 * 366
#: periods up to this many days have a timeline by day, longer ones by week
DAILY_UP_TO_DAYS = 92
#: what ``table=`` selects in CSV
CSV_TABLES = {
    "resources": (
        "resource",
        "provider",
        "kind",
        "gpu_hours",
        "core_hours",
        "distinct_users",
        "fits",
        "capacity_gpu_hours",
        "capacity_core_hours",
        "utilisation",
    ),
    "groups": ("resource", "group", "gpu_hours", "core_hours", "distinct_users"),
    "users": ("user", "gpu_hours", "core_hours"),
    "timeline": ("resource", "start", "gpu_hours", "core_hours"),
}
NOT_A_PROVIDER = (
    "contributions are shown to the contacts of a resource provider (the registry's "
    "'contacts') and to facility admins; ask the facility's operators to add you as a "
    "contact of your provider"
)


def capacity(entry: dict[str, Any], hours: float) -> dict[str, float]:
    """What a resource could deliver in ``hours``: accelerator-hours (GPU or FPGA) and
    core-hours, from its registry entry."""
    nodes = int(entry.get("node_count", 1) or 0)
    accelerators = nodes * int(entry.get("count_per_node", 0) or 0)
    cores = nodes * float(entry.get("cpu_per_node", 0) or 0)
    return {"capacity_gpu_hours": accelerators * hours, "capacity_core_hours": cores * hours}


def utilisation(row: dict[str, Any]) -> float | None:
    """Delivered over capacity: accelerator-hours for an accelerator pool, core-hours for
    a CPU pool; ``None`` where the capacity is zero."""
    if row["kind"] in ("gpu", "fpga"):
        used, cap = row["gpu_hours"], row["capacity_gpu_hours"]
    else:
        used, cap = row["core_hours"], row["capacity_core_hours"]
    return round(used / cap, 4) if cap else None


class ContributionsHandler(FacilityHandler):
    @property
    def contributions(self) -> ContributionStore:
        return ContributionStore(self.stores.db)

    async def get(self) -> None:
        """``?provider=&period=week|month|quarter|year`` (or ``since``/``until``),
        ``top=``, ``format=json|csv`` and, for CSV, ``table=``."""
        period = self.period()
        top = self.top_argument()
        fmt = self.get_query_argument("format", "json")
        table = self.get_query_argument("table", "resources")
        if fmt not in ("json", "csv"):
            raise ApiError(400, "format must be json or csv")
        if table not in CSV_TABLES:
            raise ApiError(400, f"table must be one of {', '.join(CSV_TABLES)}")
        providers = await self.visible_providers(self.get_query_argument("provider", None))
        entries = [
            r["entry"]
            for r in await self.call(self.stores.registry.resource_records)
            if r["entry"]["provider"] in providers
        ]
        days = 1 if period.until - period.since <= DAILY_UP_TO_DAYS * 86400 else 7
        report = await self.call(
            self.contributions.report,
            [e["name"] for e in entries],
            period,
            top=top,
            bucket=days * 86400.0,
        )
        report["resources"] = self.resource_rows(entries, report["resources"], period)
        if fmt == "csv":
            key = "top_users" if table == "users" else table
            self.send_csv(CSV_TABLES[table], report[key])
            return
        self.send(
            {
                "providers": providers,
                "since": _iso(period.since),
                "until": _iso(period.until),
                "hours": round((period.until - period.since) / 3600, 3),
                "bucket_days": days,
                **report,
            }
        )

    async def visible_providers(self, asked: str | None) -> list[str]:
        """The providers whose resources this caller may see (``asked`` alone when given)."""
        known = [r["entry"]["name"] for r in await self.call(self.stores.registry.provider_records)]
        admin = self.actor.is_facility_admin
        mine = known if admin else await self.call(self.contributions.providers_of, self.actor.name)
        if asked is None:
            if not admin and not mine:
                raise ApiError(403, NOT_A_PROVIDER)
            return mine
        if asked in mine:
            return [asked]
        if admin:
            raise ApiError(404, f"no provider {asked!r} in the registry")
        raise ApiError(
            403,
            f"only the contacts of provider {asked!r} and facility admins see its contributions",
        )

    @staticmethod
    def resource_rows(
        entries: list[dict[str, Any]], delivered: list[dict[str, Any]], period: Period
    ) -> list[dict[str, Any]]:
        """Every resource of the providers (those that delivered nothing with zeros), with
        capacity and utilisation."""
        by_name = {row["resource"]: row for row in delivered}
        hours = (min(period.until, period.now) - period.since) / 3600
        rows = []
        for entry in entries:
            row = {
                "resource": entry["name"],
                "provider": entry["provider"],
                "kind": entry["kind"],
                "gpu_hours": 0.0,
                "core_hours": 0.0,
                "distinct_users": 0,
                "fits": 0,
                **by_name.get(entry["name"], {}),
                **capacity(entry, max(hours, 0.0)),
            }
            row["utilisation"] = utilisation(row)
            rows.append(row)
        return rows

    def period(self) -> Period:
        """The period from ``period=`` or ``since``/``until``; 400 with the choices."""
        now = datetime.now(UTC)
        name = self.get_query_argument("period", None)
        if name is not None and name not in PERIODS:
            raise ApiError(
                400, f"period must be one of {', '.join(PERIODS)} (or give since and until)"
            )
        since = now - timedelta(days=PERIODS[name or "month"])
        since = self.instant_argument("since", since)
        until = self.instant_argument("until", now)
        if until <= since:
            raise ApiError(400, "'since' must be before 'until'")
        if until - since > timedelta(days=MAX_DAYS):
            raise ApiError(400, f"a period may cover at most {MAX_DAYS} days")
        return Period(since.timestamp(), until.timestamp(), now.timestamp())

    def top_argument(self) -> int:
        raw = self.get_query_argument("top", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise ApiError(400, "top must be a whole number from 1 to 100")
        return int(raw)

    def send_csv(self, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="contributions.csv"')
        self.finish(out.getvalue())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class ContributionProvidersHandler(ContributionsHandler):
    """``/api/contributions/providers``: the providers whose contributions the caller may
    see (``?provider=`` to ask about one); the same 403 as the report, without computing it
    (the dashboards' page asks this before it starts a kernel)."""

    async def get(self) -> None:
        providers = await self.visible_providers(self.get_query_argument("provider", None))
        self.send({"providers": providers})


class PublicContributionsHandler(ContributionsHandler):
    """``/api/contributions/public/{provider}``: the aggregated report a provider publishes
    (its registry entry's ``public_report``), without login: no user names unless the
    provider chose ``with_users``; ``format=html`` is a page to send on, linking the PDF."""

    anonymous = True

    async def get(self, provider: str) -> None:  # type: ignore[override]
        public = await self.public_report(provider)
        fmt = self.get_query_argument("format", "json")
        if fmt not in ("json", "html"):
            raise ApiError(400, "format must be json or html")
        if fmt == "html":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(public_page(public, pdf_link(provider, self.request.query)))
            return
        self.send(public)

    async def public_report(self, provider: str) -> dict[str, Any]:
        """The published report of ``provider`` for the asked period; 404 when the
        provider publishes none (or is unknown), then 400 for a bad period."""
        entry = await self.call(self.stores.registry.get_provider, provider)
        published = (entry or {}).get("public_report", "off")
        if published == "off":
            raise ApiError(404, f"provider {provider!r} publishes no report")
        period = self.period()
        entries = [
            r["entry"]
            for r in await self.call(self.stores.registry.resource_records)
            if r["entry"]["provider"] == provider
        ]
        names = [e["name"] for e in entries]
        report = await self.call(self.contributions.report, names, period, top=10)
        public = {
            "provider": provider,
            "institution": entry.get("institution"),
            "facility": self.settings.get("afhub_facility_name") or "afhub",
            "since": _iso(period.since),
            "until": _iso(period.until),
            "generated": _iso(period.now),
            "totals": await self.call(self.contributions.totals, names, period),
            "resources": self.resource_rows(entries, report["resources"], period),
            "groups": report["groups"],
            "timeline": report["timeline"],
        }
        if published == "with_users":
            public["top_users"] = report["top_users"]
        return public


class PublicReportPdfHandler(PublicContributionsHandler):
    """``/api/contributions/public/{provider}/report.pdf``: the same report, period and
    refusals as a PDF (:mod:`afhub.services.facility_api.public_report_pdf`)."""

    async def get(self, provider: str) -> None:  # type: ignore[override]
        public = await self.public_report(provider)
        # matplotlib takes about a second to import: only this page pays for it
        from afhub.services.facility_api.public_report_pdf import render_pdf

        pdf = await self.call(render_pdf, public)
        self.set_header("Content-Type", "application/pdf")
        filename = f"{provider}-contributions-{public['since'][:10]}-{public['until'][:10]}.pdf"
        self.set_header("Content-Disposition", f'inline; filename="{filename}"')
        self.finish(pdf)


def pdf_link(provider: str, query: str) -> str:
    """The PDF of the report a page of ``.../public/<provider>?query`` shows (relative)."""
    kept = [(k, v) for k, v in parse_qsl(query) if k in ("period", "since", "until")]
    return f"{quote(provider)}/report.pdf" + (f"?{urlencode(kept)}" if kept else "")


def public_page(report: dict[str, Any], pdf_href: str) -> str:
    """A plain page of the public report, with a link to its PDF; every name escaped."""
    columns = CSV_TABLES["resources"][:-3]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in report["resources"]
    )
    title = html.escape(f"{report['institution']} ({report['provider']})")
    period = html.escape(f"{report['since'][:10]} to {report['until'][:10]}")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>Contributions of {title}</h1><p>{period}</p>"
        f"<p><a href='{html.escape(pdf_href)}'>This report as a PDF</a></p>"
        f"<table border='1'><tr>{head}</tr>{rows}</table></body></html>"
    )
