"""Local accounts in the hub database (NativeAuthenticator's table), for ``afhub users``.

The hub creates the table on its first start; these functions work whether the hub is
running or not (SQLite and PostgreSQL both allow a short concurrent write).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nativeauthenticator.orm import UserInfo
from sqlalchemy import create_engine, inspect, make_url
from sqlalchemy.orm import Session

from afhub.passwords import generate_password, hash_password

#: usernames afhub creates: lower-case letters, digits, ``.``, ``_`` and ``-``
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class AccountError(ValueError):
    """An account operation cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Account:
    name: str
    authorized: bool


def validate_username(name: str) -> str:
    """The username, or :class:`AccountError` saying what is wrong with it."""
    if not USERNAME_PATTERN.match(name):
        raise AccountError(
            f"invalid username {name!r}: use 1-64 lower-case letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    return name


def _session(db_url: str) -> Session:
    engine = create_engine(db_url)
    if UserInfo.__tablename__ not in inspect(engine).get_table_names():
        raise AccountError(
            "the hub database has no accounts table yet: start the facility once "
            "(make up) before adding users"
        )
    return Session(engine)


def add_account(db_url: str, name: str) -> str:
    """Create a local account with a generated password; returns the password."""
    validate_username(name)
    password = generate_password()
    with _session(db_url) as db:
        if UserInfo.find(db, name) is not None:
            raise AccountError(
                f"user {name!r} exists already; `afhub users reset-password {name}` "
                "gives it a new password"
            )
        db.add(UserInfo(username=name, password=hash_password(password), is_authorized=True))
        db.commit()
    return password


def reset_password(db_url: str, name: str) -> str:
    """Give an existing account a new generated password; returns it."""
    password = generate_password()
    with _session(db_url) as db:
        info = UserInfo.find(db, name)
        if info is None:
            raise AccountError(f"no user {name!r}; `afhub users add {name}` creates it")
        info.password = hash_password(password)
        db.commit()
    return password


def list_accounts(db_url: str) -> list[Account]:
    """Every local account, by name."""
    with _session(db_url) as db:
        rows = db.query(UserInfo).order_by(UserInfo.username).all()
        return [Account(name=r.username, authorized=bool(r.is_authorized)) for r in rows]


def has_account(db_url: str, name: str) -> bool:
    """Whether ``name`` has a local account; ``False`` where the hub has no database or no
    accounts table yet, or another authenticator (a missing SQLite file is not created)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return False
    try:
        with _session(db_url) as db:
            return UserInfo.find(db, name) is not None
    except AccountError:
        return False
