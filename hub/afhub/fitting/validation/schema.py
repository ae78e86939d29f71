"""pyhf's schemas: the version a request may name, the workspace and patch schemas, and a fast
check of a patched workspace (only what its patch changed)."""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pyhf

from afhub.fitting.validation.errors import ValidationError, short

#: workspace/patchset schema versions this service accepts (pyhf 0.7.6 ships 1.0.0)
SUPPORTED_SCHEMA_VERSIONS: tuple[str, ...] = ("1.0.0",)


def schema_error(
    exc: pyhf.exceptions.InvalidSpecification, what: str, field: str
) -> ValidationError:
    """A readable message from pyhf's schema error, without the (possibly huge) instance."""
    parent = getattr(exc, "parent", None)
    detail = short(getattr(parent, "message", "does not match the schema"), 160)
    where = getattr(exc, "path", "") or "(top level)"
    return ValidationError(
        f"{what} does not match pyhf's schema: {detail} (at {short(where, 80)})", field=field
    )


def check_version(spec: dict[str, Any], field: str, what: str) -> str:
    version = spec.get("version")
    if not isinstance(version, str) or version not in SUPPORTED_SCHEMA_VERSIONS:
        # echo the sent value only when it looks like a version (never a path-like string)
        shown = (
            repr(version)
            if isinstance(version, str) and re.fullmatch(r"[0-9A-Za-z.+-]{1,20}", version)
            else "(missing or malformed)"
            if version is None or not isinstance(version, str)
            else "(malformed)"
        )
        raise ValidationError(
            f"{what} version {shown} is not supported; supported: "
            f"{', '.join(SUPPORTED_SCHEMA_VERSIONS)}",
            field=f"{field}.version",
        )
    return version


def validate_workspace_schema(spec: Any, field: str = "workspace") -> str:
    """Check ``spec`` against pyhf's workspace schema; return its version."""
    if not isinstance(spec, dict):
        raise ValidationError("workspace must be a JSON object", field=field)
    version = check_version(spec, field, "workspace")
    try:
        pyhf.schema.validate(spec, "workspace.json", version=version)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise schema_error(exc, "workspace", field) from None
    return version


_VALIDATORS = threading.local()


def schema_is_valid(spec: Any, schema_name: str, version: str) -> bool:
    """Fast yes/no check against one of pyhf's schemas, with a validator kept per thread
    (``version`` was checked against SUPPORTED_SCHEMA_VERSIONS by the caller)."""
    cache = _VALIDATORS.__dict__.setdefault("cache", {})
    validator = cache.get((version, schema_name))
    if validator is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            resolver = jsonschema.RefResolver(
                base_uri=f"{Path(pyhf.schema.variables.schemas).joinpath(version).as_uri()}/",
                referrer=schema_name,
                store=pyhf.schema.variables.SCHEMA_CACHE,
            )
        schema = pyhf.schema.load_schema(f"{version}/{schema_name}")
        validator = jsonschema.Draft6Validator(schema, resolver=resolver)
        cache[(version, schema_name)] = validator
    return validator.is_valid(spec)


def validate_patched(patched: Any, base: dict[str, Any], version: str, where: str) -> None:
    """Schema-check a patched workspace: fast on the changed parts, then (only when that
    fails) with pyhf on the whole, so the message points at the real location."""
    if not schema_is_valid(_changed_parts(patched, base), "workspace.json", version):
        try:
            pyhf.schema.validate(patched, "workspace.json", version=version)
        except pyhf.exceptions.InvalidSpecification as exc:
            raise schema_error(exc, where, "patches") from None
        raise ValidationError(f"{where} does not match pyhf's schema", field="patches")


def _changed_parts(patched: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The patched workspace reduced to what a patch added or changed, for a fast schema
    check (copy-on-write patching keeps untouched parts identical to the validated base).

    Every top-level field is kept whole, and so is every field of every channel the patch
    touched (its name, for one) except its samples, reduced to the new ones (or, when none
    is new, to its first: a channel must have one). Untouched channels are left out.
    """
    channels = patched.get("channels")
    if not isinstance(channels, list):
        return patched
    base_channels = {id(ch) for ch in base["channels"]}
    base_samples = {id(s) for ch in base["channels"] for s in ch["samples"]}
    reduced = []
    for channel in channels:
        if id(channel) in base_channels:
            continue
        samples = channel.get("samples") if isinstance(channel, dict) else None
        if not isinstance(samples, list):
            reduced.append(channel)
            continue
        new = [s for s in samples if id(s) not in base_samples]
        reduced.append({**channel, "samples": new or samples[:1]})
    if not reduced:
        reduced = [min(base["channels"], key=lambda ch: len(ch["samples"]))]
    return {**patched, "channels": reduced}
