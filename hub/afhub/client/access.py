"""Reaching a facility from outside it: its address, and your token for it.

Any address of a facility names it: the one ``afhub up`` prints (``.../hub/login``), the
facility's root, a service's URL (``.../services/fitting/``) or its API
(``.../services/fitting/api/``). :func:`facility_root` reduces each to the root.

``afhub login`` asks the hub for a token of your own (your password for a local account, or
a token you made at ``/hub/token``) and keeps it with the facility's root in
:func:`credentials_path` (mode 0600), where ``afhub fit`` and :class:`~afhub.client.FitClient`
find it. The token has your rights and no more.

HTTP only: it imports neither JupyterHub nor the facility's database.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import requests

#: path segments that begin the hub's or a service's part of a facility URL
_FACILITY_PARTS = ("hub", "services", "user")
#: how long a call to the hub may take (seconds)
TIMEOUT = 30


class AccessError(RuntimeError):
    """A facility cannot be reached or refused; the message says what to do."""


@dataclass(frozen=True)
class Credential:
    """A token for one facility, and whose it is."""

    url: str
    user: str
    token: str


def facility_root(url: str) -> str:
    """The root of the facility that ``url`` belongs to, ending in ``/`` (base URL kept)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AccessError(
            f"{url!r} is not a facility address: give the address the facility printed, "
            "e.g. http://127.0.0.1:8000/"
        )
    segments = parts.path.split("/")
    for index, segment in enumerate(segments):
        if segment in _FACILITY_PARTS:
            segments = segments[:index]
            break
    path = "/".join(segments).rstrip("/") + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def service_url(url: str, service: str) -> str:
    """The base URL of ``service`` (``/services/<service>/``) from any address of the
    facility; an address already inside the service keeps its host and prefix."""
    parts = urlsplit(url.strip())
    segments = parts.path.split("/")
    for index in range(len(segments) - 1):
        if segments[index : index + 2] == ["services", service]:
            path = "/".join(segments[: index + 2]) + "/"
            return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return f"{facility_root(url)}services/{service}/"


def credentials_path() -> Path:
    """``$AFHUB_CREDENTIALS``, else ``afhub/credentials.json`` in ``$XDG_CONFIG_HOME``
    (default ``~/.config``)."""
    explicit = os.environ.get("AFHUB_CREDENTIALS")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "afhub" / "credentials.json"


def _read_credentials(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"current": None, "facilities": {}}
    except (OSError, ValueError) as exc:
        raise AccessError(
            f"cannot read {path} ({exc}): delete it and run `afhub login` again"
        ) from None
    data.setdefault("facilities", {})
    return data


def save_credential(credential: Credential) -> Path:
    """Keep ``credential`` (the facility it is for becomes the current one); mode 0600."""
    path = credentials_path()
    data = _read_credentials(path)
    data["facilities"][credential.url] = {"user": credential.user, "token": credential.token}
    data["current"] = credential.url
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(data, file, indent=1)
    path.chmod(0o600)  # a file from before keeps its mode otherwise
    return path


def stored_credential(url: str | None = None) -> Credential | None:
    """The kept token for the facility of ``url`` (``None``: the last one logged in to)."""
    data = _read_credentials(credentials_path())
    root = facility_root(url) if url else data.get("current")
    entry = data["facilities"].get(root) if root else None
    if not entry:
        return None
    return Credential(url=root, user=entry["user"], token=entry["token"])


def _unreachable(root: str, exc: Exception) -> AccessError:
    return AccessError(
        f"cannot reach the facility at {root} ({type(exc).__name__}): is it running, and is "
        "this its address?"
    )


def request_token(
    root: str, user: str, password: str, *, days: int = 30, note: str = "afhub login"
) -> str:
    """A new API token of ``user`` from their password (the hub's login checks it),
    valid for ``days`` days."""
    body = {
        "auth": {"username": user, "password": password},
        "note": note,
        "expires_in": days * 24 * 3600,
    }
    try:
        response = requests.post(
            f"{root}hub/api/users/{quote(user, safe='')}/tokens", json=body, timeout=TIMEOUT
        )
    except requests.RequestException as exc:
        raise _unreachable(root, exc) from None
    if response.status_code == 403:
        raise AccessError(
            f"the facility at {root} refused user {user!r} with this password; on a facility "
            "with browser login (CILogon) use `afhub login --browser`"
        )
    if response.status_code != 201:
        raise AccessError(
            f"the facility at {root} answered {response.status_code} to a token request: "
            "is this an afhub facility's address?"
        )
    return response.json()["token"]


def whoami(root: str, token: str) -> str:
    """The name of the user whose token ``token`` is (checks that the hub accepts it)."""
    try:
        response = requests.get(
            f"{root}hub/api/user", headers={"Authorization": f"token {token}"}, timeout=TIMEOUT
        )
    except requests.RequestException as exc:
        raise _unreachable(root, exc) from None
    if response.status_code in (401, 403):
        raise AccessError(f"the facility at {root} does not accept this token")
    if response.status_code != 200:
        raise AccessError(
            f"the facility at {root} answered {response.status_code}: is this an afhub "
            "facility's address?"
        )
    return response.json()["name"]
