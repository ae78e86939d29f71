"""Groups whose budget is spent: their clusters warned, then stopped after the grace
period (the ledger's enforcement round, for Dask charges), in both gateway backends; the
backend says whether a cluster still runs (:meth:`BudgetMixin._running`) and keeps
``self._notices``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from afhub.quotas.decisions import EnforcementAction
from afhub.services.gateway.admission import KIND


class BudgetMixin:
    """The budget enforcement of afhub's gateway backends."""

    async def _loop(self, period: float, step) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed round is logged; the next one runs
                self.log.exception("afhub gateway task %s failed", step.__name__)

    async def enforce_budgets(self, now: datetime | None = None) -> list[str]:
        """Warn clusters whose group (or an ancestor) spent a budget; stop them once the
        grace period has passed since the warning (the ledger's enforcement round, for
        Dask charges). Returns what was done."""
        now = now or datetime.now(UTC)
        notices = await asyncio.to_thread(
            self.stores.ledger.enforcement_round,
            timedelta(seconds=self.grace_period),
            now,
            kind=KIND,
        )
        done: list[str] = []
        for notice in notices:
            interval = notice.interval
            name = interval.server_name.split("/", 1)[0]
            if notice.action == EnforcementAction.WARN:
                message = (
                    f"cluster {name} of {interval.user} is over budget and stops in "
                    f"{self.grace_period:g} s: {notice.reason}"
                )
                if self._notices.get(name) != message:
                    self.log.warning("%s", message)
                    self._notices[name] = message
                    done.append(f"warned {name}")
            elif f"stopped {name}" not in done and self._running(name):
                self.log.warning(
                    "Stopping cluster %s of %s: %s", name, interval.user, notice.reason
                )
                await self.stop_cluster(name)
                done.append(f"stopped {name}")
        return done
