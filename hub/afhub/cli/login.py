"""``afhub login`` and ``afhub token``: a token of your own for a facility's REST API and
the CLI's remote commands (``afhub fit``).

``afhub login URL`` (any address of the facility; default ``$AFHUB_URL``, else this
machine's facility) asks for your username and password (a local account) and gets a new
token from the hub; ``--browser`` is for a facility with browser login (CILogon): it prints
the hub's token page and reads the token you paste. Either way the token is checked with the
hub and kept, mode 0600, where ``afhub fit`` and ``FitClient`` find it. ``afhub token``
prints it, for ``curl -H "Authorization: token ..."``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from afhub.cli.database import fail
from afhub.cli.parser import paragraph
from afhub.client.access import (
    AccessError,
    Credential,
    credentials_path,
    facility_root,
    request_token,
    save_credential,
    stored_credential,
    whoami,
)
from afhub.settings import FacilitySettings


def _default_address(settings: FacilitySettings) -> str:
    return os.environ.get("AFHUB_URL") or settings.public_url


def _secret(prompt: str, from_stdin: bool) -> str:
    """A password or token: a line of standard input, or asked without echo."""
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    return getpass.getpass(prompt).strip()


def _login(args: argparse.Namespace, root: str) -> Credential:
    if args.browser:
        print(
            f"Open {root}hub/token in your browser, log in, request a new token and paste it here.",
            file=sys.stderr,
        )
        token = _secret("token: ", args.password_stdin)
        if not token:
            raise AccessError("no token given: paste the token the page shows")
        return Credential(url=root, user=whoami(root, token), token=token)
    if args.days < 1:
        raise AccessError(f"--days must be a whole number >= 1 (got {args.days})")
    user = args.user or input("username: ").strip()
    password = _secret(f"password of {user} at {root}: ", args.password_stdin)
    if not user or not password:
        raise AccessError("give a username and a password (or use --browser)")
    token = request_token(root, user, password, days=args.days)
    return Credential(url=root, user=whoami(root, token), token=token)


def cmd_login(args: argparse.Namespace, settings: FacilitySettings) -> int:
    try:
        root = facility_root(args.url or _default_address(settings))
        credential = _login(args, root)
        path = save_credential(credential)
    except AccessError as exc:
        return fail(str(exc))
    except (EOFError, KeyboardInterrupt):
        return fail("login cancelled")
    except OSError as exc:
        return fail(f"cannot keep the token in {credentials_path()}: {exc.strerror or exc}")
    print(f"logged in to {root} as {credential.user}; your token is kept in {path} (mode 0600)")
    print("`afhub fit ...` uses it; `afhub token` prints it for REST calls")
    return 0


def cmd_token(args: argparse.Namespace, settings: FacilitySettings) -> int:
    try:
        credential = stored_credential(args.url)
    except AccessError as exc:
        return fail(str(exc))
    if credential is None:
        where = facility_root(args.url) if args.url else _default_address(settings)
        return fail(f"no token kept for {where}: run `afhub login {where}` first")
    print(credential.token)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub login`` and ``afhub token``."""
    what = "get a token of your own for a facility (REST API, `afhub fit`)"
    login = subparsers.add_parser("login", help=what, description=paragraph(__doc__, 1))
    login.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="any address of the facility, e.g. the one `afhub up` printed (default: "
        "$AFHUB_URL, else this machine's facility)",
    )
    login.add_argument("--user", metavar="USER", help="your username (asked when not given)")
    login.add_argument(
        "--browser",
        action="store_true",
        help="browser login (CILogon): paste a token made at the hub's /hub/token page",
    )
    login.add_argument(
        "--days",
        type=int,
        default=30,
        metavar="N",
        help="how long the new token is valid, in days (default 30; not with --browser: the "
        "token page sets it)",
    )
    login.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (or, with --browser, the token) from standard input",
    )
    login.set_defaults(handler=cmd_login)
    token = subparsers.add_parser(
        "token",
        help="print the token `afhub login` kept (for REST calls)",
        description="Print the API token `afhub login` kept for a facility.",
    )
    token.add_argument(
        "url", nargs="?", metavar="URL", help="the facility (default: the last one logged in to)"
    )
    token.set_defaults(handler=cmd_token)
