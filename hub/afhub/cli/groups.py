"""``afhub groups ...``: the group tree and memberships, in the facility database."""

from __future__ import annotations

import argparse
from typing import Any

from afhub.cli.database import database_command, with_stores


def _create(groups: Any, args: argparse.Namespace) -> None:
    for path in args.paths:
        groups.create(path)
        print(f"created group {path}")


def _list(groups: Any, args: argparse.Namespace) -> None:
    for group in groups.list(args.under):
        indent = "  " * (group.depth - 1)
        print(f"{indent}{group.path}")


def _delete(groups: Any, args: argparse.Namespace) -> None:
    for path in groups.delete(args.path, recursive=args.recursive):
        print(f"deleted group {path}")


def _move(groups: Any, args: argparse.Namespace) -> None:
    renames = groups.move(args.path, None if args.to_top else args.new_parent)
    for old, new in renames.items():
        print(f"moved {old} -> {new}")


def _add_member(groups: Any, args: argparse.Namespace) -> None:
    member = groups.add_member(args.path, args.user, role=args.role)
    print(f"{member.user} is now {member.role.value} of {member.group}")


def _remove_member(groups: Any, args: argparse.Namespace) -> None:
    groups.remove_member(args.path, args.user)
    print(f"removed {args.user} from {args.path}")


def _members(groups: Any, args: argparse.Namespace) -> None:
    for member in groups.members(args.path):
        print(f"{member.user}\t{member.role.value}\t{member.source}")


def _set_default(groups: Any, args: argparse.Namespace) -> None:
    groups.set_default_group(args.user, args.path)
    print(f"{args.user} is charged to {args.path} by default")


SUBCOMMANDS = {
    "create": _create,
    "list": _list,
    "delete": _delete,
    "move": _move,
    "add-member": _add_member,
    "remove-member": _remove_member,
    "members": _members,
    "set-default": _set_default,
}


def cmd_groups(args: argparse.Namespace, settings: Any = None) -> int:
    return with_stores(
        args, settings, lambda stores: SUBCOMMANDS[args.groups_command](stores.groups, args)
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub groups ...``."""
    groups, gsub = database_command(subparsers, "groups", "the group tree and memberships")
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
