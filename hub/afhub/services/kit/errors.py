"""Errors a hub service answers with: a status and a message for the caller."""

from __future__ import annotations

from tornado import web

from afhub.groups.names import InvalidGroupName
from afhub.groups.tree import PermissionDenied, TreeError
from afhub.quotas.limits import InvalidQuota
from afhub.quotas.periods import InvalidPeriod
from afhub.stores.errors import StoreError


class ApiError(web.HTTPError):
    """An error with a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, reason=None)
        self.message = message


def status_of(exc: BaseException) -> tuple[int, str] | None:
    """The status and message a known error is answered with (``None``: not a known
    error; a crash the operators read about in the log)."""
    if isinstance(exc, ApiError):
        return exc.status_code, exc.message
    if isinstance(exc, PermissionDenied):
        return 403, str(exc)
    if isinstance(exc, StoreError):
        return exc.status, str(exc)
    if isinstance(exc, (InvalidGroupName, InvalidQuota, InvalidPeriod, TreeError)):
        return 400, str(exc)
    if isinstance(exc, web.HTTPError):
        return exc.status_code, exc.log_message or exc.reason or "request refused"
    return None
