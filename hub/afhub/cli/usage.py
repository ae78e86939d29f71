"""``afhub usage``: the usage of a group and its subgroups (table or CSV)."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime
from typing import Any

from afhub.cli.database import db_option, with_stores
from afhub.cli.formatting import number


def parse_instant(value: str) -> datetime:
    """``2026-11-01`` or ``2026-11-01T08:00`` (UTC unless an offset is given)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _cell(value: object) -> str:
    """A usage-report value for the terminal: floats to 4 decimals, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def cmd_usage(args: argparse.Namespace, settings: Any = None) -> int:
    def action(stores):
        from afhub.stores.ledger import USAGE_COLUMNS  # the stores load only when used

        now = datetime.now(UTC)
        report = stores.ledger.usage(args.group, args.since, args.until, now=now)
        until = min(report.until, now)
        rows = [
            {**row, "cpu_cores": number(row["cpu_cores"])}
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
            f"{until:%Y-%m-%d %H:%M} UTC: {number(report.cpu_core_hours)} CPU core-hours, "
            f"{number(report.gpu_hours)} GPU-hours, {len(rows)} interval(s)"
        )
        for row in rows:
            print("  " + "\t".join(str(row[c]) for c in USAGE_COLUMNS))

    return with_stores(args, settings, action)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub usage``."""
    usage = subparsers.add_parser(
        "usage",
        help="usage of a group and its subgroups",
        description="The CPU core-hours and GPU-hours a group and its subgroups used in a "
        "time window, with one line (or CSV row) per charged interval.",
        epilog="example: afhub usage --group atlas --since 2026-11-01 --csv",
    )
    db_option(usage)
    usage.add_argument("--group", required=True, metavar="PATH", help="the group, e.g. atlas")
    usage.add_argument(
        "--since", required=True, type=parse_instant, metavar="DATE", help="YYYY-MM-DD (UTC)"
    )
    usage.add_argument(
        "--until", type=parse_instant, metavar="DATE", help="YYYY-MM-DD (UTC; default now)"
    )
    usage.add_argument("--csv", action="store_true", help="one CSV row per interval")
    usage.set_defaults(handler=cmd_usage)
