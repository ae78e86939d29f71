"""``afhub quota set|show``: group quotas, with usage and resets."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from afhub.cli.database import database_command, with_stores
from afhub.cli.formatting import number
from afhub.quotas.limits import LimitName


def _limit_value(value: str) -> str | None:
    return None if value.lower() in ("none", "unlimited", "-") else value


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
                    f"{k}={number(v) if k != 'period' else v}" for k, v in limits.to_dict().items()
                )
            )
        else:
            show_quota(stores, args.path)

    return with_stores(args, settings, action)


def show_quota(stores, path: str) -> None:
    from afhub.quotas.periods import parse_period

    now = datetime.now(UTC)
    nodes = stores.ledger.status(path, now=now)  # a group that does not exist: nothing printed
    print(f"{'group':<32} {'limit':<16} {'used':>10} {'limit':>10}  resets")
    for node in nodes:
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
            print(
                f"{node.path:<32} {name.value:<16} {number(used):>10} {number(limit):>10}  {resets}"
            )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub quota ...``."""
    quota, qsub = database_command(subparsers, "quota", "group quotas")
    what = "set limits of a group ('none' removes a limit)"
    p = qsub.add_parser(
        "set",
        help=what,
        description="Set limits of a group; limits not given stay as they are. A value of "
        "'none' removes that limit (the group is then limited only by its ancestors).",
        epilog="example: afhub quota set atlas/higgs --gpu-hours 100 --max-servers none",
    )
    p.add_argument("path", metavar="PATH", help="the group, e.g. atlas/higgs")
    for name in LimitName:
        whole = name in (LimitName.MAX_SERVERS, LimitName.MAX_GPUS)
        p.add_argument(
            f"--{name.value.replace('_', '-')}",
            dest=name.value,
            metavar="N",
            help=f"{name.label}"
            + (" per period" if name.is_budget else "")
            + (": a whole number" if whole else ": a number")
            + " >= 0, or 'none' to remove the limit",
        )
    p.add_argument(
        "--period",
        metavar="PERIOD",
        help="when budgets reset: 'month' (default) or 'rolling:<n>h|d', e.g. rolling:7d",
    )
    p = qsub.add_parser("show", help="limits, usage and resets of a group and its ancestors")
    p.add_argument("path", metavar="PATH", help="the group, e.g. atlas/higgs")
    quota.set_defaults(handler=cmd_quota)
