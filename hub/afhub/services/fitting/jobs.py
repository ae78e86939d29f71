"""``/api/jobs``: submit, list, inspect, read results of and cancel one's own fit jobs."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

from afhub.fitting.plan import request_of_task
from afhub.fitting.validation import ValidationError, validate_request
from afhub.services.fitting.base import FittingHandler
from afhub.services.kit.errors import ApiError
from afhub.stores.fitting import ACTIVE_STATES, FINAL_STATES

JOB_ID = r"(?P<job_id>[^/]+)"
STATES = ACTIVE_STATES + FINAL_STATES


class Submissions:
    """Submissions being validated, by user and by group (counted against the limits)."""

    def __init__(self) -> None:
        self.by_user: Counter[str] = Counter()
        self.by_group: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_user.values())


class JobsHandler(FittingHandler):
    async def post(self) -> None:
        """Validate a fit request and queue it; 201 with the job."""
        config = self.config
        wall = self._wall_seconds()
        group = await self.call(
            self.stores.groups.resolve_charge_group,
            self.user,
            self.get_query_argument("group", None),
        )
        pending: Submissions = self.settings["afhub_submissions"]
        mine, theirs = await self.call(self.fits.active_counts, self.user, group)
        if mine + pending.by_user[self.user] >= config.max_jobs_per_user:
            raise ApiError(
                429,
                f"you have {mine + pending.by_user[self.user]} queued or running fit jobs "
                f"(counting submissions being checked), the limit per user is "
                f"{config.max_jobs_per_user}; wait for one to finish or cancel one",
            )
        if theirs + pending.by_group[group] >= config.max_jobs_per_group:
            raise ApiError(
                429,
                f"group {group!r} has {theirs + pending.by_group[group]} queued or running fit "
                f"jobs, the limit per group is {config.max_jobs_per_group}; try again later",
            )
        if pending.total >= 4 * config.max_validations:
            raise ApiError(429, "the fitting service is busy checking other submissions; retry")
        pending.by_user[self.user] += 1
        pending.by_group[group] += 1
        try:
            try:
                task = await asyncio.get_running_loop().run_in_executor(
                    self.settings["afhub_validators"],
                    validate_request,
                    self.request.body,
                    config.limits(),
                )
            except ValidationError as exc:
                self.send_invalid(exc.message, exc.field, exc.status)
                return
            job = await self.call(
                self.fits.create_job,
                owner=self.user,
                group=group,
                operation=task.operation,
                settings=task.settings.to_dict(),
                measurement=task.measurement,
                workspace_sha256=task.workspace_sha256,
                request=request_of_task(task),
                patch_count=max(1, len(task.patches)),
                wall_seconds=wall,
                max_per_user=config.max_jobs_per_user,
                max_per_group=config.max_jobs_per_group,
            )
        finally:
            pending.by_user[self.user] -= 1
            pending.by_group[group] -= 1
        self.scheduler.wake()
        self.set_header("Location", self.links(job.id)["self"])
        self.send({**job.to_dict(), "links": self.links(job.id)}, 201)

    def _wall_seconds(self) -> float:
        limit = self.config.wall_seconds
        raw = self.get_query_argument("wall_seconds", None)
        if raw is None:
            return limit
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0 or value > limit:
            raise ApiError(
                400, f"wall_seconds must be a number of seconds above 0 and at most {limit:g}"
            )
        return value

    async def get(self) -> None:
        """The caller's jobs, newest first (``?state=``, ``?limit=``)."""
        state = self.get_query_argument("state", None)
        if state is not None and state not in STATES:
            raise ApiError(400, f"state must be one of: {', '.join(STATES)}")
        raw = self.get_query_argument("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise ApiError(400, "limit must be a whole number from 1 to 1000")
        jobs = await self.call(self.fits.list, self.user, state=state, limit=int(raw))
        self.send({"jobs": [{**j.to_dict(), "links": self.links(j.id)} for j in jobs]})


class JobHandler(FittingHandler):
    async def get(self, job_id: str) -> None:
        """State and progress of one of the caller's jobs (404 for anyone else's)."""
        job = await self.call(self.fits.get, job_id, self.user)
        self.send({**job.to_dict(), "links": self.links(job.id)})

    async def delete(self, job_id: str) -> None:
        """Cancel a queued or running job (its running fits are killed)."""
        job = await self.call(self.fits.cancel, job_id, self.user)
        self.scheduler.cancel(job_id)
        self.send({**job.to_dict(), "links": self.links(job.id)})


class ResultsHandler(FittingHandler):
    async def get(self, job_id: str) -> None:
        """Per-patch results stored so far, with provenance."""
        job = await self.call(self.fits.get, job_id, self.user)
        results = await self.call(self.fits.results, job_id)
        self.send({"job": job.to_dict(), "results": [r.to_dict() for r in results]})
