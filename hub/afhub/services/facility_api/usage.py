"""``/api/groups/{path}/-/usage``: the ledger of a group's subtree."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from afhub.groups import tree
from afhub.groups.tree import Action
from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError
from afhub.stores.ledger import USAGE_COLUMNS


class UsageHandler(FacilityHandler):
    async def get(self, path: str) -> None:
        """Usage in ``[since, until)`` (default: this calendar month up to now)."""
        tree.require(self.actor, Action.READ_USAGE, path)
        now = datetime.now(UTC)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        since = self.instant_argument("since", month_start)
        until = self.instant_argument("until", now)
        if until <= since:
            raise ApiError(400, "'since' must be before 'until'")
        fmt = self.get_query_argument("format", "json")
        if fmt not in ("json", "csv"):
            raise ApiError(400, "format must be json or csv")
        report = await self.call(self.stores.ledger.usage, path, since, until, now=now)
        end = min(until, now)
        rows = report.rows(now)
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, USAGE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.finish(out.getvalue())
            return
        self.send(
            {
                "group": path,
                "since": since.isoformat(),
                "until": end.isoformat(),
                "cpu_core_hours": report.cpu_core_hours,
                "gpu_hours": report.gpu_hours,
                "intervals": rows,
            }
        )
