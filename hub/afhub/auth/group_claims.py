"""Group claims of a CILogon login (``isMemberOf`` by default) -> hub group names.

The claim is normalised (:func:`normalize_group_claim`) and mapped to afhub group paths
(:func:`map_groups`); names that are not valid group paths are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from afhub.auth.idp_policy import PolicyError
from afhub.groups.names import InvalidGroupName, validate_path


def normalize_group_claim(value: object) -> list[str]:
    """The group names in a group claim, in order, without duplicates or blanks.

    CILogon sends ``isMemberOf`` as a list, some IdPs as one comma-separated string.
    Anything else (a missing claim, numbers, nested objects) gives no groups.
    """
    if value is None:
        return []
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return []
    groups: list[str] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if item and item not in groups:
                groups.append(item)
    return groups


def is_group_path(name: object) -> bool:
    """True if ``name`` is a valid afhub group path (``atlas``, ``atlas/higgs``)."""
    try:
        validate_path(name)
    except InvalidGroupName:
        return False
    return True


def check_group_name(name: object, where: str) -> str:
    """Validate a hub group name given in configuration (an afhub group path)."""
    try:
        return validate_path(name)
    except InvalidGroupName as e:
        raise PolicyError(f"{where}: {e}") from None


def map_groups(
    claims: Iterable[str],
    group_map: Mapping[str, str],
    group_prefixes: Iterable[str] = (),
    keep_unmapped: bool = False,
) -> set[str]:
    """Hub group names for the values of a group claim.

    A value listed in ``group_map`` becomes the mapped name; else a value starting with one
    of ``group_prefixes`` becomes the rest of the value; else it is kept as is only when
    ``keep_unmapped``.  Names that are not valid afhub group paths
    (:func:`afhub.groups.names.validate_path`: lowercase segments joined by ``/``) are
    dropped.
    """
    group_prefixes = [p for p in group_prefixes if p]
    groups: set[str] = set()
    for claim in claims:
        if claim in group_map:
            name = group_map[claim]
        else:
            prefix = next((p for p in group_prefixes if claim.startswith(p)), None)
            if prefix is not None:
                name = claim[len(prefix) :]
            elif keep_unmapped:
                name = claim
            else:
                continue
        if is_group_path(name):
            groups.add(name)
    return groups
