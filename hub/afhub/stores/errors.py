"""Errors raised by the stores, each with the HTTP status an API should answer with."""

from __future__ import annotations


class StoreError(Exception):
    """Base class; ``status`` is the HTTP status that fits, ``str()`` the message."""

    status = 400


class NotFound(StoreError):
    status = 404


class AlreadyExists(StoreError):
    status = 409


class Busy(StoreError):
    """The change would orphan something that is running (a group with running servers)."""

    status = 409


class NotAMember(StoreError):
    status = 403


class InvitationError(StoreError):
    """An invitation that cannot be redeemed; the subclass says why."""

    status = 400


class InvitationNotFound(InvitationError):
    status = 404


class InvitationExpired(InvitationError):
    status = 410


class InvitationRevoked(InvitationError):
    status = 410


class InvitationUsedUp(InvitationError):
    status = 410


class InvitationWrongEmail(InvitationError):
    status = 403


class LedgerConflict(StoreError):
    """An open interval already exists for this server, cluster or job."""

    status = 409
