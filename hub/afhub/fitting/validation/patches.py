"""The patches of a request (a pyhf patchset or a list of JSON Patch documents): read, selected,
costed before anything is applied, and applied with :mod:`afhub.fitting.jsonpatch` (the one
applier), its errors worded as validation errors."""

from __future__ import annotations

from typing import Any

import pyhf

from afhub.fitting.jsonpatch import (
    UNBOUNDED,
    PatchError,
    PatchLimits,
    PatchTooLarge,
    Sizer,
    apply_patch_sized,
)
from afhub.fitting.validation.errors import ValidationError, short
from afhub.fitting.validation.limits import Limits
from afhub.fitting.validation.schema import check_version, schema_error, schema_is_valid


def patches_from_patchset(patchset: Any, limits: Limits) -> list[dict[str, Any]]:
    if not isinstance(patchset, dict):
        raise ValidationError("patchset must be a JSON object", field="patchset")
    version = check_version(patchset, "patchset", "patchset")
    raw = patchset.get("patches")
    if isinstance(raw, list) and len(raw) > limits.max_patches:
        raise ValidationError(
            f"patchset has {len(raw)} patches, over the cap of {limits.max_patches}",
            field="patchset.patches",
        )
    try:
        parsed = pyhf.PatchSet(patchset, version=version)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise schema_error(exc, "patchset", "patchset") from None
    except pyhf.exceptions.InvalidPatchSet as exc:
        raise ValidationError(
            f"patchset is invalid: {short(str(exc), 200)}", field="patchset"
        ) from None
    return [{"name": p.name, "patch": list(p.patch)} for p in parsed.patches]


def patches_from_list(raw: Any, version: str, limits: Limits) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise ValidationError(
            "patches must be a non-empty list of JSON Patch documents", field="patches"
        )
    if len(raw) > limits.max_patches:
        raise ValidationError(
            f"{len(raw)} patches, over the cap of {limits.max_patches}", field="patches"
        )
    out = []
    for i, item in enumerate(raw):
        name = f"patch_{i}"
        ops = item
        if isinstance(item, dict):
            if set(item) - {"name", "patch"} or not isinstance(item.get("name"), str):
                raise ValidationError(
                    f"patches[{i}] must be a list of operations or {{'name': str, 'patch': [...]}}",
                    field=f"patches[{i}]",
                )
            name, ops = item["name"], item.get("patch")
        if not schema_is_valid(ops, "jsonpatch.json", version):
            try:
                pyhf.schema.validate(ops, "jsonpatch.json", version=version)
            except pyhf.exceptions.InvalidSpecification as exc:
                raise schema_error(exc, f"patches[{i}]", f"patches[{i}]") from None
            raise ValidationError(f"patches[{i}] is not a valid JSON Patch", field=f"patches[{i}]")
        out.append({"name": name, "patch": ops})
    names = [p["name"] for p in out]
    if len(set(names)) != len(names):
        raise ValidationError("patch names must be unique", field="patches")
    return out


def select_patches(patches: list[dict[str, Any]], names: Any) -> list[dict[str, Any]]:
    if names is None:
        return patches
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise ValidationError(
            "patch_names must be a non-empty list of strings", field="patch_names"
        )
    by_name = {p["name"]: p for p in patches}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValidationError(
            f"patch_names: no patch named {short(missing[0], 60)!r}", field="patch_names"
        )
    return [by_name[n] for n in dict.fromkeys(names)]


def apply_patch(
    workspace: dict[str, Any],
    patch: dict[str, Any],
    limits: PatchLimits = UNBOUNDED,
    *,
    sizer: Sizer | None = None,
    base_nodes: int | None = None,
) -> dict[str, Any]:
    """Apply one ``{"name", "patch"}`` to ``workspace`` (RFC 6902) or raise ValidationError.

    Copy-on-write (:mod:`afhub.fitting.jsonpatch`): ``workspace`` is never modified, and the
    result shares every part the patch did not touch with it (treat both as read-only).
    ``limits`` default to none: the engines apply patches this module has already checked.
    """
    return apply_sized(workspace, patch, limits, sizer, base_nodes)[0]


def apply_sized(
    workspace: dict[str, Any],
    patch: dict[str, Any],
    limits: PatchLimits,
    sizer: Sizer | None,
    base_nodes: int | None,
) -> tuple[Any, int]:
    try:
        return apply_patch_sized(
            workspace, patch["patch"], limits, sizer=sizer, base_nodes=base_nodes
        )
    except PatchTooLarge as exc:
        raise ValidationError(
            f"patch {short(patch['name'], 60)!r} is too large: {exc}", field="patches", status=413
        ) from None
    except PatchError as exc:
        raise ValidationError(
            f"patch {short(patch['name'], 60)!r} does not apply to the workspace: {exc}",
            field="patches",
        ) from None


def check_patch_work(patches: list[dict[str, Any]], base_nodes: int, limits: Limits) -> None:
    """Refuse, before applying anything, a request whose patches would cost more than the
    caps: operations in all, and patches times the workspace's size (each patched workspace
    is checked whole)."""
    operations = sum(len(p["patch"]) for p in patches)
    if operations > limits.max_operations:
        raise ValidationError(
            f"the patches hold {operations} JSON Patch operations in all, over the limit of "
            f"{limits.max_operations} per request; split them over several requests",
            field="patches",
            status=413,
        )
    work = len(patches) * base_nodes
    if work > limits.max_work_nodes:
        raise ValidationError(
            f"{len(patches)} patches of a workspace of {base_nodes} JSON values make "
            f"{work} units of work, over the limit of {limits.max_work_nodes} per request "
            "(patches times workspace size); split the patches over several requests",
            field="patches",
            status=413,
        )


def verify_patchset_digest(patchset: dict[str, Any], workspace: dict[str, Any]) -> None:
    digests = (patchset.get("metadata") or {}).get("digests") or {}
    expected = digests.get("sha256")
    if expected is not None and expected != pyhf.utils.digest(workspace, algorithm="sha256"):
        raise ValidationError(
            "patchset was made for a different workspace: its sha256 digest does not match",
            field="patchset.metadata.digests",
        )
