"""A whole fit request: untrusted bytes or a parsed object in, a validated
:class:`~afhub.fitting.types.FitTask` out (or :class:`ValidationError`).

The checks, in order: the body (:mod:`.body`); the request's own shape (known keys, types)
and its settings (:mod:`.settings`); the workspace's schema (:mod:`.schema`); the patches
(:mod:`.patches`), each applied to the workspace; the semantics (:mod:`.workspace`) on the
workspace, or on every patched one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from afhub.fitting.jsonpatch import Sizer
from afhub.fitting.types import OPERATIONS, FitSettings, FitTask
from afhub.fitting.validation.body import parse_body
from afhub.fitting.validation.errors import ValidationError, check_known, short
from afhub.fitting.validation.limits import DEFAULT_LIMITS, Limits, patch_limits
from afhub.fitting.validation.patches import (
    apply_sized,
    check_patch_work,
    patches_from_list,
    patches_from_patchset,
    select_patches,
    verify_patchset_digest,
)
from afhub.fitting.validation.schema import validate_patched, validate_workspace_schema
from afhub.fitting.validation.settings import parse_settings
from afhub.fitting.validation.workspace import check_workspace_semantics

REQUEST_KEYS = frozenset(
    {"workspace", "patchset", "patches", "patch_names", "operation", "measurement", "settings"}
)


def canonical_sha256(obj: Any) -> str:
    """sha256 (hex) of ``obj`` serialised with sorted keys and compact separators."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_fields(payload: Any) -> tuple[str, str | None]:
    """The request's own shape: an object of known keys with a workspace; returns its
    operation and measurement."""
    if not isinstance(payload, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    check_known(payload, REQUEST_KEYS, "request field(s)", "body")
    if "workspace" not in payload:
        raise ValidationError("request has no workspace", field="workspace")
    operation = payload.get("operation", "hypotest")
    if operation not in OPERATIONS:
        raise ValidationError(
            f"operation {short(operation, 40)!r} is not supported; allowed: "
            f"{', '.join(OPERATIONS)}",
            field="operation",
        )
    measurement = payload.get("measurement")
    if measurement is not None and not isinstance(measurement, str):
        raise ValidationError("measurement must be a string", field="measurement")
    return operation, measurement


def _read_patches(
    payload: dict[str, Any], workspace: dict[str, Any], version: str, limits: Limits
) -> list[dict[str, Any]]:
    """The request's patches (from ``patchset`` or ``patches``), those ``patch_names``
    selects."""
    if payload.get("patchset") is not None and payload.get("patches") is not None:
        raise ValidationError("send either patchset or patches, not both", field="patches")
    if payload.get("patchset") is not None:
        patches = patches_from_patchset(payload["patchset"], limits)
        verify_patchset_digest(payload["patchset"], workspace)
    elif payload.get("patches") is not None:
        patches = patches_from_list(payload["patches"], version, limits)
    else:
        patches = []
    return select_patches(patches, payload.get("patch_names"))


def _check_patched(
    workspace: dict[str, Any],
    patches: list[dict[str, Any]],
    version: str,
    settings: FitSettings,
    operation: str,
    measurement: str | None,
    limits: Limits,
) -> None:
    """Apply every patch (costed first, and as it goes) and check each patched workspace."""
    sizer = Sizer()
    base_nodes = sizer.measure(workspace)[0]
    check_patch_work(patches, base_nodes, limits)
    caps = patch_limits(limits)
    work = 0
    for patch in patches:
        patched, nodes = apply_sized(workspace, patch, caps, sizer, base_nodes)
        work += nodes
        if work > limits.max_work_nodes:
            raise ValidationError(
                f"the patched workspaces hold more than {limits.max_work_nodes} JSON values in "
                "all (the limit of work per request, patches times workspace size); split the "
                "patches over several requests",
                field="patches",
                status=413,
            )
        where = f"workspace patched with {short(patch['name'], 60)!r}"
        if not isinstance(patched, dict) or patched.get("version") != version:
            raise ValidationError(f"{where}: a patch may not change the version", field="patches")
        validate_patched(patched, workspace, version, where)
        check_workspace_semantics(patched, settings, operation, measurement, limits, where)


def validate_payload(payload: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> FitTask:
    """Validate an already-parsed request object into a :class:`FitTask`."""
    operation, measurement = _check_fields(payload)
    settings = parse_settings(payload.get("settings"), limits)
    workspace = payload["workspace"]
    version = validate_workspace_schema(workspace)
    patches = _read_patches(payload, workspace, version, limits)
    if not patches:
        check_workspace_semantics(workspace, settings, operation, measurement, limits)
    _check_patched(workspace, patches, version, settings, operation, measurement, limits)
    return FitTask(
        workspace=workspace,
        patches=tuple(copy.deepcopy(patches)),
        operation=operation,
        settings=settings,
        workspace_sha256=canonical_sha256(workspace),
        measurement=measurement,
    )


def validate_request(body: bytes | str, limits: Limits = DEFAULT_LIMITS) -> FitTask:
    """Untrusted request bytes in, a validated :class:`FitTask` out (or ValidationError)."""
    return validate_payload(parse_body(body, limits), limits)
