"""Generated passwords and secret files (pure helpers, no hub imports)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: length in bytes of the randomness behind a generated password (24 URL-safe characters)
PASSWORD_BYTES = 18


def hash_password(password: str) -> bytes:
    """bcrypt hash of ``password``, as NativeAuthenticator stores it."""
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt())


def generate_password() -> str:
    """A new random password, URL-safe, 24 characters."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def write_secret_file(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` readable by the owner only (mode 0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_secret_file(path: Path) -> str:
    """The first line of a secret file, stripped."""
    return path.read_text().splitlines()[0].strip()


def ensure_admin_password(path: Path) -> tuple[str, bool]:
    """The admin password stored at ``path``, generating it on first use.

    Returns ``(password, created)``; ``created`` is True only the first time, which is the
    one time the password is printed.
    """
    if path.exists():
        return read_secret_file(path), False
    password = generate_password()
    write_secret_file(path, password)
    return password, True
