"""Invitations: a group admin invites someone (optionally a given email) to join a group.

The token is shown once, at creation; only its SHA-256 is stored. Redemption is a single
conditional ``UPDATE ... SET uses_left = uses_left - 1 WHERE uses_left > 0 AND ...``, so a
single-use invitation admits one person even when many redeem it at the same instant.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from afhub.groups import tree
from afhub.groups.tree import Action, Actor, Role
from afhub.stores.database import Database
from afhub.stores.errors import (
    AlreadyExists,
    InvitationExpired,
    InvitationNotFound,
    InvitationRevoked,
    InvitationUsedUp,
    InvitationWrongEmail,
    NotFound,
    StoreError,
)
from afhub.stores.groups import MemberInfo, add_member_in, group_row, roles_of, user_row
from afhub.stores.models import (
    Group,
    GroupClosure,
    Invitation,
    InvitationRedemption,
    User,
    iso,
)

MAX_USES = 10_000
MIN_EXPIRY = timedelta(minutes=1)
MAX_EXPIRY = timedelta(days=365)
DEFAULT_EXPIRY = timedelta(days=7)
_EMAIL_RE = re.compile(r"[^@\s<>\"'&]{1,64}@[^@\s<>\"'&]{1,255}\.[^@\s<>\"'&]{1,63}")
PUBLIC_ID_ALPHABET = string.ascii_letters + string.digits
PUBLIC_ID_LENGTH = 22  # 22 characters of 62 carry 131 bits
_PUBLIC_ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")


def new_public_id() -> str:
    """A random invitation id of letters and digits (131 bits): it says nothing about how
    many invitations exist, cannot be guessed, is safe in a URL, and never starts with
    ``-`` (which a command line would read as an option)."""
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def not_found(invitation_id: object) -> NotFound:
    """The one answer for an id that does not exist and for one the caller may not manage:
    the same 404, naming no group."""
    shown = invitation_id if isinstance(invitation_id, str) and len(invitation_id) <= 32 else "?"
    return NotFound(
        f"invitation {shown!r} does not exist or is not one you may manage; "
        "list the invitations of your group to find its id"
    )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_email(email: object) -> str:
    if (
        not isinstance(email, str)
        or len(email) > 320
        or not _EMAIL_RE.fullmatch(email)
        or any(unicodedata.category(ch)[0] == "C" for ch in email)
    ):
        raise StoreError(f"{str(email)[:60]!r} is not an email address")
    return email.lower()


@dataclass(frozen=True)
class Joined:
    """One person who joined by an invitation, and when."""

    user: str
    at: datetime

    def to_dict(self) -> dict[str, str]:
        return {"user": self.user, "at": self.at.isoformat()}


@dataclass(frozen=True)
class InvitationInfo:
    id: str
    group: str
    email: str | None
    role: Role
    expires_at: datetime
    max_uses: int
    uses_left: int
    revoked_at: datetime | None
    created_by: str | None
    created_at: datetime
    #: who redeemed it, oldest first (only those who may manage the invitation read it)
    joined: tuple[Joined, ...] = ()

    def status(self, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.uses_left <= 0:
            return "used"
        if self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self, now: datetime | None = None) -> dict[str, object]:
        return {
            "id": self.id,
            "group": self.group,
            "email": self.email,
            "role": self.role.value,
            "expires_at": self.expires_at.isoformat(),
            "max_uses": self.max_uses,
            "uses_left": self.uses_left,
            "revoked_at": iso(self.revoked_at),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "status": self.status(now),
            "joined": [j.to_dict() for j in self.joined],
        }


@dataclass(frozen=True)
class CreatedInvitation:
    """A new invitation and its secret token (shown once; put it in the link)."""

    info: InvitationInfo
    token: str


def _info(row: Invitation, path: str, joined: tuple[Joined, ...] = ()) -> InvitationInfo:
    return InvitationInfo(
        id=row.public_id or "",
        group=path,
        email=row.email,
        role=Role(row.role),
        expires_at=row.expires_at,
        max_uses=row.max_uses,
        uses_left=row.uses_left,
        revoked_at=row.revoked_at,
        created_by=row.created_by,
        created_at=row.created_at,
        joined=joined,
    )


def _with_joined(session: Session, found: Iterable[Row]) -> list[InvitationInfo]:
    """The invitations of ``(row, group path)`` pairs, each with who joined by it (one
    query for all of them)."""
    found = list(found)
    joined: dict[int, list[Joined]] = defaultdict(list)
    if found:
        redemptions = session.execute(
            select(InvitationRedemption)
            .where(InvitationRedemption.invitation_id.in_([row.id for row, _ in found]))
            .order_by(InvitationRedemption.redeemed_at, InvitationRedemption.id)
        ).scalars()
        for r in redemptions:
            joined[r.invitation_id].append(Joined(r.user_name, r.redeemed_at))
    return [_info(row, path, tuple(joined[row.id])) for row, path in found]


class InvitationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        path: str,
        *,
        actor: Actor | None = None,
        email: str | None = None,
        expires_in: timedelta = DEFAULT_EXPIRY,
        uses: int = 1,
        role: Role | str = Role.MEMBER,
        now: datetime | None = None,
    ) -> CreatedInvitation:
        """Create an invitation to ``path``; only admins of it or an ancestor may."""
        role = Role.parse(role)
        if actor is not None:
            tree.require(actor, Action.MANAGE_INVITATIONS, path)
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise StoreError(f"uses must be a whole number from 1 to {MAX_USES}")
        if not isinstance(expires_in, timedelta) or not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
            raise StoreError("an invitation must expire between 1 minute and 365 days from now")
        email = validate_email(email) if email is not None else None
        now = now or datetime.now(UTC)
        token = secrets.token_urlsafe(32)
        with self.db.write() as session:
            group = group_row(session, path)
            row = Invitation(
                public_id=new_public_id(),
                group_id=group.id,
                token_hash=hash_token(token),
                email=email,
                role=role.value,
                expires_at=now + expires_in,
                max_uses=uses,
                uses_left=uses,
                created_by=actor.name if actor else None,
                created_at=now,
            )
            session.add(row)
            session.flush()
            return CreatedInvitation(_info(row, group.path), token)

    def list(
        self, path: str, *, actor: Actor | None = None, include_subgroups: bool = False
    ) -> list[InvitationInfo]:
        if actor is not None:
            tree.require(actor, Action.MANAGE_INVITATIONS, path)
        with self.db.read() as session:
            group = group_row(session, path)
            query = select(Invitation, Group.path).join(Group, Group.id == Invitation.group_id)
            if include_subgroups:
                query = query.where(
                    Group.id.in_(
                        select(GroupClosure.descendant_id).where(
                            GroupClosure.ancestor_id == group.id
                        )
                    )
                )
            else:
                query = query.where(Group.id == group.id)
            return _with_joined(session, session.execute(query.order_by(Invitation.id)))

    def get(self, invitation_id: str, *, actor: Actor | None = None) -> InvitationInfo:
        """The invitation with public id ``invitation_id``; with ``actor``, only one they may
        manage. Otherwise the same :class:`NotFound` whether it exists or not."""
        if not isinstance(invitation_id, str) or not _PUBLIC_ID_RE.fullmatch(invitation_id):
            raise not_found(invitation_id)
        with self.db.read() as session:
            found = session.execute(
                select(Invitation, Group.path)
                .join(Group, Group.id == Invitation.group_id)
                .where(Invitation.public_id == invitation_id)
            ).first()
            info = _with_joined(session, [found])[0] if found is not None else None
        if info is None:
            raise not_found(invitation_id)
        if actor is not None:
            try:
                tree.require(actor, Action.MANAGE_INVITATIONS, info.group)
            except tree.PermissionDenied:
                raise not_found(invitation_id) from None
        return info

    def revoke(
        self, invitation_id: str, *, actor: Actor | None = None, now: datetime | None = None
    ) -> InvitationInfo:
        self.get(invitation_id, actor=actor)
        with self.db.write() as session:
            session.execute(
                update(Invitation)
                .where(Invitation.public_id == invitation_id, Invitation.revoked_at.is_(None))
                .values(revoked_at=now or datetime.now(UTC))
            )
        return self.get(invitation_id)

    def redeem(
        self, token: str, *, user: str, email: str | None = None, now: datetime | None = None
    ) -> MemberInfo:
        """``user`` (logged in, with ``email`` from their login) joins the invitation's group.

        Raises ``InvitationNotFound`` (404), ``InvitationExpired`` / ``InvitationRevoked`` /
        ``InvitationUsedUp`` (410), ``InvitationWrongEmail`` (403), ``AlreadyExists`` (409,
        already a member: nothing is consumed).
        """
        if not isinstance(token, str) or not 10 <= len(token) <= 200:
            raise InvitationNotFound("this invitation link is not valid")
        now = now or datetime.now(UTC)
        digest = hash_token(token)
        try:
            with self.db.write() as session:
                invitation, path = _find_by_digest(session, digest)
                user_email = email
                if user_email is None:
                    user_email = session.scalar(select(User.email).where(User.name == user))
                self._check(invitation, path, user_email, now)
                if path in roles_of(session, user):
                    raise AlreadyExists(f"{user} is already a member of group {path!r}")
                _claim_one_use(session, invitation, path, user_email, now)
                session.add(
                    InvitationRedemption(
                        invitation_id=invitation.id, user_name=user, redeemed_at=now
                    )
                )
                if email:
                    user_row(session, user, create=True, email=email)
                return add_member_in(
                    session, path, user, role=Role(invitation.role), source="invitation"
                )
        except IntegrityError:
            raise AlreadyExists(f"{user} has already redeemed this invitation") from None

    @staticmethod
    def _check(invitation: Invitation, path: str, email: str | None, now: datetime) -> None:
        if invitation.revoked_at is not None:
            raise InvitationRevoked(
                f"this invitation to {path!r} was revoked; ask a group admin for a new one"
            )
        if invitation.expires_at <= now:
            raise InvitationExpired(
                f"this invitation to {path!r} expired at "
                f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC; ask a group admin for a new one"
            )
        if invitation.uses_left <= 0:
            raise InvitationUsedUp(
                f"this invitation to {path!r} has been used up; ask a group admin for a new one"
            )
        if invitation.email and (email or "").lower() != invitation.email.lower():
            raise InvitationWrongEmail(
                f"this invitation to {path!r} was sent to a different email address; log in "
                "with the account of the invited address"
            )


def _find_by_digest(session: Session, digest: str) -> tuple[Invitation, str]:
    """(invitation, group path) of the token's invitation; ``InvitationNotFound`` if none."""
    found = session.execute(
        select(Invitation, Group.path)
        .join(Group, Group.id == Invitation.group_id)
        .where(Invitation.token_hash == digest)
    ).first()
    if found is None:
        raise InvitationNotFound("this invitation link is not valid")
    return found[0], found[1]


def _claim_one_use(
    session: Session, invitation: Invitation, path: str, user_email: str | None, now: datetime
) -> None:
    """Take one use, atomically with the checks (a concurrent redeemer may take the last)."""
    claimed = session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation.id,
            Invitation.uses_left > 0,
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
            or_(
                Invitation.email.is_(None),
                func.lower(Invitation.email) == (user_email or "").lower(),
            ),
        )
        .values(uses_left=Invitation.uses_left - 1)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        raise InvitationUsedUp(
            f"this invitation to {path!r} has been used up; ask a group admin for a new one"
        )
