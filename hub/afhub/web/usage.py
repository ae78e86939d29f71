"""My usage: for each of my groups every limit with used / limit and when it resets; what I
have running (servers, Dask clusters, fit jobs: the ledger's open intervals) with what each
costs per hour; any warning of a stop with its time; my fit jobs in the fitting service."""

from __future__ import annotations

import asyncio
from typing import Any

from afhub.web.base import PageHandler
from afhub.web.facility import ServiceRefused, group_url

#: the ledger's states of something still charging
OPEN_STATES = ("pending", "running")
#: the fit jobs' states still in the queue or running
ACTIVE_JOBS = ("queued", "running")


def running_of(user: str, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``user``'s open intervals in the groups' usage reports, once each (a subgroup's
    interval is in its ancestors' reports too)."""
    seen: dict[Any, dict[str, Any]] = {}
    for report in reports:
        for row in report.get("intervals", []):
            if row.get("user") == user and row.get("state") in OPEN_STATES:
                seen.setdefault(row["id"], row)
    return sorted(seen.values(), key=lambda row: str(row.get("start")))


def limit_rows(chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group of a quota chain and limit that is set."""
    rows = []
    for node in chain:
        for name, value in node["limits"].items():
            if value["limit"] is None:
                continue
            rows.append(
                {
                    "group": node["group"],
                    "limit_name": name,
                    "used": value["used"],
                    "limit": value["limit"],
                    "period": node["period"],
                    "resets_at": node["resets_at"],
                }
            )
    return rows


class UsagePage(PageHandler):
    async def get(self) -> None:
        api = self.facility()
        me = await api.get("users/me")
        groups = sorted(me.get("groups") or {})
        quotas = await asyncio.gather(*(api.get(group_url(g, "quota")) for g in groups))
        reports = await asyncio.gather(*(api.get(group_url(g, "usage")) for g in groups))
        jobs, jobs_error = [], None
        try:
            jobs = (await self.fitting().get("jobs", limit="100"))["jobs"]
        except ServiceRefused as exc:
            jobs_error = exc.message
        self.render_page(
            "afhub/usage.html",
            me=me,
            quotas=[
                {"group": g, "rows": limit_rows(q["chain"])}
                for g, q in zip(groups, quotas, strict=True)
            ],
            running=running_of(me["name"], reports),
            jobs=[j for j in jobs if j.get("state") in ACTIVE_JOBS],
            jobs_error=jobs_error,
        )
