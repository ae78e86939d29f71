"""``afhub groups|quota|invite|usage``: manage groups, quotas, invitations and read usage.

These commands talk to the afhub database directly (``$AFHUB_DB_URL``, default
``sqlite:///$AFHUB_HOME/afhub.sqlite``), as a trusted operator: no permission checks
apply. People without database access use the facility API instead.

Hook into the main parser with :func:`register`; each subcommand sets ``handler`` to a
function ``(args, settings=None) -> int`` (exit status).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from afhub.groups.tree import PermissionDenied
from afhub.quotas.limits import LimitName
from afhub.stores.ledger import USAGE_COLUMNS

INVITE_PATH = "services/facility/join/"
_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([mhd])")


def database_url(args: argparse.Namespace, settings: Any = None) -> str:
    """``--db-url``, else ``$AFHUB_DB_URL``, else the SQLite file in the facility home."""
    if getattr(args, "db_url", None):
        return args.db_url
    if os.environ.get("AFHUB_DB_URL"):
        return os.environ["AFHUB_DB_URL"]
    home = getattr(settings, "home", None) or os.environ.get("AFHUB_HOME", ".afhub")
    return f"sqlite:///{Path(home) / 'afhub.sqlite'}"


def parse_instant(value: str) -> datetime:
    """``2026-11-01`` or ``2026-11-01T08:00`` (UTC unless an offset is given)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse_duration(value: str) -> timedelta:
    match = _DURATION_RE.fullmatch(value)
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration: use e.g. 30m, 12h, 7d")
    count, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=count), "h": timedelta(hours=count), "d": timedelta(days=count)}[
        unit
    ]


def _limit_value(value: str) -> str | None:
    return None if value.lower() in ("none", "unlimited", "-") else value


def _cell(value: object) -> str:
    """A usage-report value for the terminal: floats to 4 decimals, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _stores(args: argparse.Namespace, settings: Any):
    from afhub.stores.facade import Stores

    return Stores.open(database_url(args, settings))


def _run(args: argparse.Namespace, settings: Any, action) -> int:
    from afhub.stores.errors import StoreError

    try:
        stores = _stores(args, settings)
    except Exception as exc:  # a bad URL or an unreachable server: say so, no traceback
        print(f"afhub: cannot open the database: {exc}", file=sys.stderr)
        return 2
    try:
        action(stores)
    except (StoreError, PermissionDenied, ValueError) as exc:
        print(f"afhub: {exc}", file=sys.stderr)
        return 2
    finally:
        stores.close()
    return 0


# --- groups -----------------------------------------------------------------------------------


def cmd_groups(args: argparse.Namespace, settings: Any = None) -> int:
    def action(stores):
        groups = stores.groups
        command = args.groups_command
        if command == "create":
            for path in args.paths:
                groups.create(path)
                print(f"created group {path}")
        elif command == "list":
            for group in groups.list(args.under):
                indent = "  " * (group.depth - 1)
                print(f"{indent}{group.path}")
        elif command == "delete":
            for path in groups.delete(args.path, recursive=args.recursive):
                print(f"deleted group {path}")
        elif command == "move":
            renames = groups.move(args.path, None if args.to_top else args.new_parent)
            for old, new in renames.items():
                print(f"moved {old} -> {new}")
        elif command == "add-member":
            member = groups.add_member(args.path, args.user, role=args.role)
            print(f"{member.user} is now {member.role.value} of {member.group}")
        elif command == "remove-member":
            groups.remove_member(args.path, args.user)
            print(f"removed {args.user} from {args.path}")
        elif command == "members":
            for member in groups.members(args.path):
                print(f"{member.user}\t{member.role.value}\t{member.source}")
        elif command == "set-default":
            groups.set_default_group(args.user, args.path)
            print(f"{args.user} is charged to {args.path} by default")

    return _run(args, settings, action)


# --- quotas -----------------------------------------------------------------------------------


def cmd_quota(args: argparse.Namespace, settings: Any = None) -> int:
    def action(stores):
        if args.quota_command == "set":
            values: dict[str, object] = {}
            for name in LimitName:
                raw = getattr(args, name.value)
                if raw is not None:
                    values[name.value] = _limit_value(raw)
            if args.period is not None:
                values["period"] = args.period
            if not values:
                raise ValueError("give at least one limit, e.g. --gpu-hours 100")
            limits = stores.quotas.set(args.path, values)
            print(
                f"quota of {args.path}: "
                + ", ".join(
                    f"{k}={_fmt(v) if k != 'period' else v}" for k, v in limits.to_dict().items()
                )
            )
        else:
            show_quota(stores, args.path)

    return _run(args, settings, action)


def show_quota(stores, path: str) -> None:
    from afhub.quotas.periods import parse_period

    now = datetime.now(UTC)
    print(f"{'group':<32} {'limit':<16} {'used':>10} {'limit':>10}  resets")
    for node in stores.ledger.status(path, now=now):
        window = parse_period(node.limits.period).window(now)
        for name in LimitName:
            limit = node.limits.get(name)
            used = node.usage.get(name)
            if limit is None and not used:
                continue
            resets = "-"
            if name.is_budget:
                resets = (
                    f"{window.resets_at:%Y-%m-%d %H:%M} UTC"
                    if window.resets_at
                    else parse_period(node.limits.period).describe()
                )
            print(f"{node.path:<32} {name.value:<16} {_fmt(used):>10} {_fmt(limit):>10}  {resets}")


# --- invitations ------------------------------------------------------------------------------


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
            base = getattr(settings, "public_url", None) or os.environ.get(
                "AFHUB_PUBLIC_URL", "http://127.0.0.1:8000/"
            )
            info = created.info
            print(
                f"invitation {info.id} to {info.group} ({info.role.value}), "
                f"{info.max_uses} use(s), expires {info.expires_at:%Y-%m-%d %H:%M} UTC"
            )
            print(f"token: {created.token}")
            print(f"link:  {base.rstrip('/')}/{INVITE_PATH}{created.token}")
        elif args.invite_command == "list":
            for info in invitations.list(args.path, include_subgroups=True):
                print(
                    f"{info.id}\t{info.group}\t{info.status()}\t{info.email or '-'}\t"
                    f"{info.uses_left}/{info.max_uses}\t{info.expires_at:%Y-%m-%d %H:%M}"
                )
        else:
            info = invitations.revoke(args.id)
            print(f"revoked invitation {info.id} to {info.group}")

    return _run(args, settings, action)


# --- usage ------------------------------------------------------------------------------------


def cmd_usage(args: argparse.Namespace, settings: Any = None) -> int:
    def action(stores):
        now = datetime.now(UTC)
        report = stores.ledger.usage(args.group, args.since, args.until, now=now)
        until = min(report.until, now)
        rows = [
            {**row, "cpu_cores": _fmt(row["cpu_cores"])}
            | {k: _cell(row[k]) for k in ("cpu_core_hours", "gpu_hours", "start", "stop")}
            for row in report.rows(now)
        ]
        if args.csv:
            writer = csv.DictWriter(sys.stdout, USAGE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            return
        print(
            f"usage of {report.group} (and subgroups) from {report.since:%Y-%m-%d %H:%M} to "
            f"{until:%Y-%m-%d %H:%M} UTC: {report.cpu_core_hours:.2f} CPU core-hours, "
            f"{report.gpu_hours:.2f} GPU-hours, {len(rows)} interval(s)"
        )
        for row in rows:
            print("  " + "\t".join(str(row[c]) for c in USAGE_COLUMNS))

    return _run(args, settings, action)


# --- parser -----------------------------------------------------------------------------------


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db-url",
        help="afhub database URL (default: $AFHUB_DB_URL or sqlite:///$AFHUB_HOME/afhub.sqlite)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``groups``, ``quota``, ``invite`` and ``usage`` subcommands."""
    groups = subparsers.add_parser("groups", help="the group tree and memberships")
    _db_option(groups)
    gsub = groups.add_subparsers(dest="groups_command", required=True)
    p = gsub.add_parser("create", help="create groups (parents first): atlas atlas/higgs")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = gsub.add_parser("list", help="list groups as a tree")
    p.add_argument("--under", metavar="PATH", help="only this group's subtree")
    p = gsub.add_parser("delete", help="delete a group (refused while servers run)")
    p.add_argument("path")
    p.add_argument("--recursive", action="store_true", help="also delete its subgroups")
    p = gsub.add_parser("move", help="move a group and its subtree under another group")
    p.add_argument("path")
    p.add_argument("new_parent", nargs="?")
    p.add_argument("--to-top", action="store_true", help="make it a top-level group")
    p = gsub.add_parser("add-member", help="add a user to a group (or change their role)")
    p.add_argument("path")
    p.add_argument("user")
    p.add_argument("--role", choices=["member", "admin"], default="member")
    p = gsub.add_parser("remove-member", help="remove a user from a group")
    p.add_argument("path")
    p.add_argument("user")
    p = gsub.add_parser("members", help="list a group's members")
    p.add_argument("path")
    p = gsub.add_parser("set-default", help="the group a user's servers are charged to")
    p.add_argument("user")
    p.add_argument("path")
    groups.set_defaults(handler=cmd_groups)

    quota = subparsers.add_parser("quota", help="group quotas")
    _db_option(quota)
    qsub = quota.add_subparsers(dest="quota_command", required=True)
    p = qsub.add_parser("set", help="set limits of a group ('none' removes a limit)")
    p.add_argument("path")
    for name in LimitName:
        p.add_argument(
            f"--{name.value.replace('_', '-')}",
            dest=name.value,
            metavar="N",
            help=f"{name.label}" + (" per period" if name.is_budget else ""),
        )
    p.add_argument("--period", help="'month' (default) or 'rolling:<n>h|d', e.g. rolling:7d")
    p = qsub.add_parser("show", help="limits, usage and resets of a group and its ancestors")
    p.add_argument("path")
    quota.set_defaults(handler=cmd_quota)

    invite = subparsers.add_parser("invite", help="invitations to join a group")
    _db_option(invite)
    isub = invite.add_subparsers(dest="invite_command", required=True)
    p = isub.add_parser("create", help="create an invitation; prints the link once")
    p.add_argument("path")
    p.add_argument("--email", help="only this email may redeem it")
    p.add_argument(
        "--expires",
        type=parse_duration,
        default=timedelta(days=7),
        help="e.g. 12h, 7d (default 7d)",
    )
    p.add_argument("--uses", type=int, default=1, help="how many people may join (default 1)")
    p.add_argument("--role", choices=["member", "admin"], default="member")
    p = isub.add_parser("list", help="invitations to a group and its subgroups")
    p.add_argument("path")
    p = isub.add_parser("revoke", help="revoke an invitation")
    p.add_argument("id", help="the invitation's id, as 'afhub invite list' shows it")
    invite.set_defaults(handler=cmd_invite)

    usage = subparsers.add_parser("usage", help="usage of a group and its subgroups")
    _db_option(usage)
    usage.add_argument("--group", required=True)
    usage.add_argument("--since", required=True, type=parse_instant, help="YYYY-MM-DD (UTC)")
    usage.add_argument("--until", type=parse_instant, help="YYYY-MM-DD (UTC; default now)")
    usage.add_argument("--csv", action="store_true", help="one CSV row per interval")
    usage.set_defaults(handler=cmd_usage)
