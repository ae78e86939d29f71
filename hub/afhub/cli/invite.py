"""``afhub invite create|list|revoke``: invitations to join a group."""

from __future__ import annotations

import argparse
import os
import re
from datetime import timedelta
from typing import Any

from afhub.cli.database import database_command, with_stores

INVITE_PATH = "services/afhub/join/"  # the join page (afhub.web)
#: the help of every ``--role`` option
ROLE_HELP = "member (default) or admin (manages the group and its subgroups)"
_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([mhd])")


def parse_duration(value: str) -> timedelta:
    match = _DURATION_RE.fullmatch(value)
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration: use e.g. 30m, 12h, 7d")
    count, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=count), "h": timedelta(hours=count), "d": timedelta(days=count)}[
        unit
    ]


def print_invitation(created: Any, settings: Any) -> None:
    """What ``invite create`` prints: the invitation, its token and its link (once)."""
    info = created.info
    print(
        f"invitation {info.id} to {info.group} ({info.role.value}), "
        f"{info.max_uses} use(s), expires {info.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    print(f"token: {created.token}")
    base = os.environ.get("AFHUB_PUBLIC_URL") or settings.public_url
    print(f"link:  {base.rstrip('/')}/{INVITE_PATH}{created.token}")


def cmd_invite(args: argparse.Namespace, settings: Any = None) -> int:
    def action(stores):
        invitations = stores.invitations
        if args.invite_command == "create":
            created = invitations.create(
                args.path,
                email=args.email,
                expires_in=args.expires,
                uses=args.uses,
                role=args.role,
            )
            print_invitation(created, settings)
        elif args.invite_command == "list":
            for info in invitations.list(args.path, include_subgroups=True):
                joined = ",".join(j.user for j in info.joined) or "-"
                print(
                    f"{info.id}\t{info.group}\t{info.status()}\t{info.email or '-'}\t"
                    f"{info.uses_left}/{info.max_uses}\t{info.expires_at:%Y-%m-%d %H:%M}\t"
                    f"{joined}"
                )
        else:
            info = invitations.revoke(args.id)
            print(f"revoked invitation {info.id} to {info.group}")

    return with_stores(args, settings, action)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub invite ...``."""
    invite, isub = database_command(subparsers, "invite", "invitations to join a group")
    p = isub.add_parser("create", help="create an invitation; prints the link once")
    p.add_argument("path", metavar="PATH", help="the group to join, e.g. atlas/higgs")
    p.add_argument("--email", help="only this email may redeem it")
    p.add_argument(
        "--expires",
        type=parse_duration,
        default=timedelta(days=7),
        metavar="DURATION",
        help="e.g. 30m, 12h, 7d (default 7d)",
    )
    p.add_argument(
        "--uses", type=int, default=1, metavar="N", help="how many people may join (default 1)"
    )
    p.add_argument("--role", choices=["member", "admin"], default="member", help=ROLE_HELP)
    p = isub.add_parser(
        "list",
        help="invitations to a group and its subgroups: id, group, status, email, uses "
        "left, expiry (UTC) and who joined by it",
    )
    p.add_argument("path", metavar="PATH", help="the group, e.g. atlas")
    p = isub.add_parser("revoke", help="revoke an invitation")
    p.add_argument("id", metavar="ID", help="the invitation's id, as `afhub invite list` shows it")
    invite.set_defaults(handler=cmd_invite)
