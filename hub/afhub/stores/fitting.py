"""Fit jobs and their per-patch results, in the facility database.

A job is one validated fit request of one user: the request itself is stored (compressed)
so that a restart of the fitting service can run it again, and every patch's outcome is
stored as it arrives. Results are reusable: each carries a *cache key* (sha256 of the
workspace hash, the patch content, the operation, the measurement and the settings), and a
later request with the same key is served from the stored result
(:meth:`FitStore.cached_results`).

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``. A restart puts
``running`` jobs back to ``queued`` (:meth:`FitStore.requeue_interrupted`); their stored
patch results are kept, only the missing patches run again.
"""

from __future__ import annotations

import json
import secrets
import string
import zlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import defer

from afhub.stores.database import Database
from afhub.stores.errors import NotFound, StoreError
from afhub.stores.models import FitJob, FitPatchResult, iso, utcnow

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE_STATES = (QUEUED, RUNNING)
FINAL_STATES = (DONE, FAILED, CANCELLED)
#: outcomes that depend only on the request (worth reusing); failures (timeouts, kills,
#: crashes) are not cached
CACHEABLE_STATUSES = ("converged", "not_converged", "unsupported")


class TooManyJobs(StoreError):
    """A concurrency limit on queued+running jobs (per user or per group) is reached."""

    status = 429


@dataclass(frozen=True)
class JobInfo:
    """A job without its request payload."""

    id: str
    owner: str
    group: str | None
    state: str
    operation: str
    settings: dict[str, Any]
    measurement: str | None
    workspace_sha256: str
    patch_count: int
    done_count: int
    wall_seconds: float
    attempts: int
    ledger_interval_id: int | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "group": self.group,
            "state": self.state,
            "operation": self.operation,
            "settings": self.settings,
            "measurement": self.measurement,
            "workspace_sha256": self.workspace_sha256,
            "progress": {"done": self.done_count, "total": self.patch_count},
            "wall_seconds": self.wall_seconds,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


@dataclass(frozen=True)
class StoredResult:
    index: int
    patch: str | None
    cache_key: str
    status: str
    engine: str
    cached: bool
    result: dict[str, Any]
    #: owner and group of the job that stored it (set by :meth:`FitStore.cached_results`)
    owner: str | None = None
    group: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "cached": self.cached, **self.result}


def _job(row: FitJob) -> JobInfo:
    return JobInfo(
        id=row.id,
        owner=row.owner,
        group=row.group_path,
        state=row.state,
        operation=row.operation,
        settings=json.loads(row.settings),
        measurement=row.measurement,
        workspace_sha256=row.workspace_sha256,
        patch_count=row.patch_count,
        done_count=row.done_count or 0,
        wall_seconds=row.wall_seconds,
        attempts=row.attempts or 0,
        ledger_interval_id=row.ledger_interval_id,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _stored(row: FitPatchResult) -> StoredResult:
    return StoredResult(
        index=row.patch_index,
        patch=row.patch_name,
        cache_key=row.cache_key,
        status=row.status,
        engine=row.engine,
        cached=bool(row.cached),
        result=json.loads(row.result),
    )


def pack_request(payload: dict[str, Any]) -> bytes:
    """Compress a JSON-safe request for storage."""
    return zlib.compress(json.dumps(payload, separators=(",", ":")).encode("utf-8"), 6)


def unpack_request(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob).decode("utf-8"))


JOB_ID_ALPHABET = string.ascii_letters + string.digits
JOB_ID_LENGTH = 22  # 22 characters of 62 carry 131 bits


def new_job_id() -> str:
    """A random job id of letters and digits (131 bits).

    Letters and digits only, so an id is safe in a URL and never starts with ``-``, which a
    command line (``afhub fit status ID``) would read as an option.
    """
    return "".join(secrets.choice(JOB_ID_ALPHABET) for _ in range(JOB_ID_LENGTH))


def _active_jobs(session, condition) -> int:
    """How many queued or running jobs match ``condition``."""
    return session.scalar(
        select(func.count()).select_from(FitJob).where(condition, FitJob.state.in_(ACTIVE_STATES))
    )


class FitStore:
    """Jobs, per-patch results and the result cache."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- jobs -------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        owner: str,
        group: str | None,
        operation: str,
        settings: dict[str, Any],
        measurement: str | None,
        workspace_sha256: str,
        request: dict[str, Any],
        patch_count: int,
        wall_seconds: float,
        max_per_user: int,
        max_per_group: int,
    ) -> JobInfo:
        """Queue a job, refusing (:class:`TooManyJobs`) when the owner already has
        ``max_per_user`` or the group ``max_per_group`` queued or running jobs; the count
        and the insert are one transaction."""
        blob = pack_request(request)
        with self.db.write() as session:
            mine = _active_jobs(session, FitJob.owner == owner)
            if mine >= max_per_user:
                raise TooManyJobs(
                    f"you have {mine} queued or running fit jobs, the limit per user is "
                    f"{max_per_user}; wait for one to finish or cancel one"
                )
            if group is not None:
                theirs = _active_jobs(session, FitJob.group_path == group)
                if theirs >= max_per_group:
                    raise TooManyJobs(
                        f"group {group!r} has {theirs} queued or running fit jobs, the limit "
                        f"per group is {max_per_group}; try again later"
                    )
            row = FitJob(
                id=new_job_id(),
                owner=owner,
                group_path=group,
                state=QUEUED,
                operation=operation,
                settings=json.dumps(settings),
                measurement=measurement,
                workspace_sha256=workspace_sha256,
                request=blob,
                patch_count=patch_count,
                done_count=0,
                wall_seconds=float(wall_seconds),
                attempts=0,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return _job(row)

    def get(self, job_id: str, owner: str | None = None) -> JobInfo:
        """The job; ``NotFound`` if it does not exist or (with ``owner``) is someone else's."""
        with self.db.read() as session:
            row = session.get(FitJob, job_id, options=[defer(FitJob.request)])
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"no fit job {job_id!r}")
            return _job(row)

    def request_of(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            blob = session.scalar(select(FitJob.request).where(FitJob.id == job_id))
            if blob is None:
                raise NotFound(f"no fit job {job_id!r}")
            return unpack_request(blob)

    def list(self, owner: str, *, state: str | None = None, limit: int = 100) -> list[JobInfo]:
        """The owner's jobs, newest first."""
        with self.db.read() as session:
            query = select(FitJob).options(defer(FitJob.request)).where(FitJob.owner == owner)
            if state is not None:
                query = query.where(FitJob.state == state)
            query = query.order_by(FitJob.created_at.desc(), FitJob.id).limit(limit)
            return [_job(r) for r in session.scalars(query)]

    def queued(self) -> list[JobInfo]:
        """Queued jobs, oldest first."""
        with self.db.read() as session:
            query = (
                select(FitJob).where(FitJob.state == QUEUED).order_by(FitJob.created_at, FitJob.id)
            )
            return [_job(r) for r in session.scalars(query)]

    def active_counts(self, owner: str, group: str | None) -> tuple[int, int]:
        """Queued plus running jobs of ``owner`` and of ``group``."""
        with self.db.read() as session:
            mine = _active_jobs(session, FitJob.owner == owner)
            theirs = 0
            if group is not None:
                theirs = _active_jobs(session, FitJob.group_path == group)
            return int(mine), int(theirs)

    def counts(self) -> dict[str, int]:
        with self.db.read() as session:
            rows = session.execute(select(FitJob.state, func.count()).group_by(FitJob.state))
            return {state: int(n) for state, n in rows}

    def start(self, job_id: str, ledger_interval_id: int | None) -> bool:
        """queued → running; False if the job is no longer queued (cancelled meanwhile)."""
        with self.db.write() as session:
            row = session.get(FitJob, job_id)
            if row is None or row.state != QUEUED:
                return False
            row.state = RUNNING
            row.started_at = utcnow()
            row.attempts = (row.attempts or 0) + 1
            row.ledger_interval_id = ledger_interval_id
            return True

    def finish(self, job_id: str, state: str, error: str | None = None) -> bool:
        """An active job ends in ``state``; False if it had already ended (no change)."""
        if state not in FINAL_STATES:
            raise ValueError(f"{state!r} is not a final state")
        with self.db.write() as session:
            row = session.get(FitJob, job_id)
            if row is None or row.state not in ACTIVE_STATES:
                return False
            row.state = state
            row.error = error
            row.finished_at = utcnow()
            return True

    def cancel(self, job_id: str, owner: str) -> JobInfo:
        """Cancel the owner's active job (a finished job is left as it is)."""
        with self.db.write() as session:
            row = session.get(FitJob, job_id)
            if row is None or row.owner != owner:
                raise NotFound(f"no fit job {job_id!r}")
            if row.state in ACTIVE_STATES:
                row.state = CANCELLED
                row.error = "cancelled by its owner"
                row.finished_at = utcnow()
            return _job(row)

    def requeue_interrupted(self) -> list[str]:
        """At service start: every ``running`` job back to ``queued`` (its stored patch
        results are kept); returns their ids."""
        with self.db.write() as session:
            ids = list(session.scalars(select(FitJob.id).where(FitJob.state == RUNNING)))
            if ids:
                session.execute(
                    update(FitJob)
                    .where(FitJob.id.in_(ids))
                    .values(state=QUEUED, ledger_interval_id=None)
                )
            return ids

    # --- results ----------------------------------------------------------------------------

    def add_result(
        self,
        job_id: str,
        index: int,
        *,
        patch: str | None,
        cache_key: str,
        status: str,
        engine: str,
        result: dict[str, Any],
        cached: bool = False,
    ) -> bool:
        """Store one patch's result and count it in the job's progress; a second result for
        the same patch is ignored (returns False)."""
        with self.db.write() as session:
            exists = session.scalar(
                select(FitPatchResult.id).where(
                    FitPatchResult.job_id == job_id, FitPatchResult.patch_index == index
                )
            )
            if exists is not None:
                return False
            session.add(
                FitPatchResult(
                    job_id=job_id,
                    patch_index=index,
                    patch_name=patch,
                    cache_key=cache_key,
                    status=status,
                    engine=engine,
                    cached=int(cached),
                    result=json.dumps(result),
                    created_at=utcnow(),
                )
            )
            session.execute(
                update(FitJob)
                .where(FitJob.id == job_id)
                .values(done_count=func.coalesce(FitJob.done_count, 0) + 1)
            )
            return True

    def results(self, job_id: str) -> list[StoredResult]:
        with self.db.read() as session:
            rows = session.scalars(
                select(FitPatchResult)
                .where(FitPatchResult.job_id == job_id)
                .order_by(FitPatchResult.patch_index)
            )
            return [_stored(r) for r in rows]

    def done_indices(self, job_id: str) -> set[int]:
        with self.db.read() as session:
            return set(
                session.scalars(
                    select(FitPatchResult.patch_index).where(FitPatchResult.job_id == job_id)
                )
            )

    def cached_results(
        self,
        keys: list[str],
        *,
        owner: str | None = None,
        group: str | None = None,
        prefer_owner: str | None = None,
    ) -> dict[str, StoredResult]:
        """For each key with a reusable stored result (converged or not converged, never a
        failure), the most recent one, with the owner and group of its job.

        ``owner``/``group``: only results of that user's / that group's jobs.
        ``prefer_owner``: a result of that user's own jobs when there is one (so that what
        they are told about it, ``cached``, is about their own earlier request).
        """
        found: dict[str, StoredResult] = {}
        wanted = list(dict.fromkeys(keys))
        with self.db.read() as session:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                query = (
                    select(FitPatchResult, FitJob.owner, FitJob.group_path)
                    .join(FitJob, FitJob.id == FitPatchResult.job_id)
                    .where(
                        FitPatchResult.cache_key.in_(chunk),
                        FitPatchResult.status.in_(CACHEABLE_STATUSES),
                    )
                    .order_by(FitPatchResult.id.desc())
                )
                if owner is not None:
                    query = query.where(FitJob.owner == owner)
                if group is not None:
                    query = query.where(FitJob.group_path == group)
                for row, row_owner, row_group in session.execute(query):
                    stored = replace(_stored(row), owner=row_owner, group=row_group)
                    have = found.get(row.cache_key)
                    if have is None or (
                        prefer_owner is not None
                        and have.owner != prefer_owner
                        and row_owner == prefer_owner
                    ):
                        found[row.cache_key] = stored
        return found

    def delete_job(self, job_id: str) -> None:
        with self.db.write() as session:
            session.execute(delete(FitPatchResult).where(FitPatchResult.job_id == job_id))
            session.execute(delete(FitJob).where(FitJob.id == job_id))
