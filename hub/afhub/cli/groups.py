"""``afhub groups ...``: the group tree and memberships, in the facility database."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

from afhub.cli.database import database_command, missing_facility, with_stores
from afhub.cli.invite import ROLE_HELP, print_invitation
from afhub.groups.names import parent_path
from afhub.stores.errors import NotFound
from afhub.stores.known_users import UnknownUser, add_known_member


def _chain(path: str) -> list[str]:
    """``path`` and its ancestors, root first."""
    chain = [path]
    while (parent := parent_path(chain[0])) is not None:
        chain.insert(0, parent)
    return chain


def _exists(groups: Any, path: str) -> bool:
    try:
        groups.get(path)
    except NotFound:
        return False
    return True


def _create(groups: Any, args: argparse.Namespace, _settings: Any) -> None:
    for path in args.paths:
        if not args.parents:
            parent = parent_path(path)
            if parent is not None and not _exists(groups, parent):
                raise ValueError(
                    f"parent group {parent!r} does not exist: create it first, or use "
                    f"`afhub groups create --parents {path}`"
                )
            groups.create(path)
            print(f"created group {path}")
            continue
        for step in _chain(path):
            if not _exists(groups, step):
                groups.create(step)
                print(f"created group {step}")


def _list(groups: Any, args: argparse.Namespace, _settings: Any) -> None:
    found = groups.list(args.under)
    for group in found:
        indent = "  " * (group.depth - 1)
        print(f"{indent}{group.path}")
    if not found and not args.under:
        print("no groups yet (create one with `afhub groups create PATH`)")


def _delete(groups: Any, args: argparse.Namespace, _settings: Any) -> None:
    for path in groups.delete(args.path, recursive=args.recursive):
        print(f"deleted group {path}")


def _move(groups: Any, args: argparse.Namespace, _settings: Any) -> None:
    if (args.new_parent is None) != args.to_top:
        raise ValueError("give either NEW_PARENT or --to-top")
    renames = groups.move(args.path, None if args.to_top else args.new_parent)
    for old, new in renames.items():
        print(f"moved {old} -> {new}")


def _local_account(settings: Any) -> Callable[[str], bool] | None:
    """Whether a name has a local account in this facility's hub database (none: no hub)."""
    if settings is None or missing_facility(settings.hub_db_url):
        return None
    from afhub.auth.accounts import has_account

    return functools.partial(has_account, settings.hub_db_url)


def _add_member(groups: Any, args: argparse.Namespace, settings: Any, stores: Any) -> None:
    try:
        member = add_known_member(
            groups, args.path, args.user, role=args.role, has_account=_local_account(settings)
        )
    except UnknownUser:
        if not args.invite:
            raise ValueError(
                f"no user {args.user!r} on this facility (never logged in, no local account): "
                f"check the name; `afhub users add {args.user}` creates a local account, or "
                "--invite prints a join link to send them"
            ) from None
        created = stores.invitations.create(args.path, role=args.role, uses=1)
        print_invitation(created, settings)
        print(f"send the link to {args.user}: they join {args.path} when they open it")
        return
    print(f"{member.user} is now {member.role.value} of {member.group}")


def _remove_member(groups: Any, args: argparse.Namespace, _settings: Any) -> None:
    groups.remove_member(args.path, args.user)
    print(f"removed {args.user} from {args.path}")


def _members(groups: Any, args: argparse.Namespace, _settings: Any) -> None:
    for member in groups.members(args.path):
        print(f"{member.user}\t{member.role.value}\t{member.source}")


def _set_default(groups: Any, args: argparse.Namespace, _settings: Any) -> None:
    groups.set_default_group(args.user, args.path)
    print(f"{args.user} is charged to {args.path} by default")


SUBCOMMANDS = {
    "create": _create,
    "list": _list,
    "delete": _delete,
    "move": _move,
    "remove-member": _remove_member,
    "members": _members,
    "set-default": _set_default,
}


def cmd_groups(args: argparse.Namespace, settings: Any = None) -> int:
    def action(stores: Any) -> None:
        if args.groups_command == "add-member":
            _add_member(stores.groups, args, settings, stores)
        else:
            SUBCOMMANDS[args.groups_command](stores.groups, args, settings)

    return with_stores(args, settings, action)


def _path(
    parser: argparse.ArgumentParser, help: str = "the group's path, e.g. atlas/higgs"
) -> None:
    parser.add_argument("path", metavar="PATH", help=help)


def _user(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", metavar="USER", help="the user's name on the facility")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub groups ...``."""
    groups, gsub = database_command(subparsers, "groups", "the group tree and memberships")
    p = gsub.add_parser("create", help="create groups: atlas/higgs needs atlas (or --parents)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="group paths, e.g. atlas/higgs")
    p.add_argument(
        "--parents", action="store_true", help="also create missing parents; existing ones stay"
    )
    p = gsub.add_parser("list", help="list groups as a tree")
    p.add_argument("--under", metavar="PATH", help="only this group's subtree")
    p = gsub.add_parser("delete", help="delete a group (refused while servers run)")
    _path(p)
    p.add_argument("--recursive", action="store_true", help="also delete its subgroups")
    p = gsub.add_parser("move", help="move a group and its subtree under another group")
    _path(p)
    p.add_argument("new_parent", nargs="?", metavar="NEW_PARENT", help="the new parent's path")
    p.add_argument("--to-top", action="store_true", help="make it a top-level group")
    p = gsub.add_parser("add-member", help="add a user to a group (or change their role)")
    _path(p)
    _user(p)
    p.add_argument("--role", choices=["member", "admin"], default="member", help=ROLE_HELP)
    p.add_argument(
        "--invite",
        action="store_true",
        help="for a user who has never logged in: print a one-use join link to send them",
    )
    p = gsub.add_parser("remove-member", help="remove a user from a group")
    _path(p)
    _user(p)
    p = gsub.add_parser("members", help="list a group's members: user, role, source")
    _path(p)
    p = gsub.add_parser("set-default", help="the group a user's servers are charged to")
    _user(p)
    _path(p, "the group (the user must be a member)")
    groups.set_defaults(handler=cmd_groups)
