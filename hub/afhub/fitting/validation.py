"""Turn untrusted fit-request bytes into a validated :class:`~afhub.fitting.types.FitTask`.

Everything a request can get wrong raises :class:`ValidationError` with a message a person can
act on (it names the field and the problem) and never a server path or a stack trace. The
checks, in order:

1. body size, UTF-8, nesting depth (an iterative scan of the raw text, before parsing), JSON
   syntax, non-finite numbers (``NaN``/``Infinity`` literals and overflowing numbers such as
   ``1e999``), duplicate object keys, unpaired surrogates;
2. the request's own shape (known keys, types), the settings;
3. the workspace: ``version`` against :data:`SUPPORTED_SCHEMA_VERSIONS` (checked here, so the
   request never chooses a schema file), pyhf's workspace schema, size caps;
4. patches (a pyhf patchset or a list of JSON Patch documents): pyhf's schemas, each patch
   applied to the workspace, and the semantic checks below on every patched workspace;
5. semantics pyhf does not check or checks late: observations present with one count per bin,
   per-bin modifier data of the right length, the POI defined with one parameter, parameter
   ``bounds``/``inits`` of the right shape and ordered, POI values and scan within the POI's
   bounds.

Request body (JSON object)::

    {"workspace": {...}, "patchset": {...} | "patches": [[ops] | {"name", "patch"}],
     "patch_names": [...], "operation": "hypotest", "measurement": "name",
     "settings": {"test_stat": "qtilde", ...}}

Patches are applied to the whole workspace (``jsonpatch`` semantics, as HEPData's patch files
are meant). A patched workspace is checked here structurally; pyhf's full schema check of each
patched workspace happens again when the engine builds it.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
import re
import threading
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jsonschema
import pyhf

from afhub.fitting.jsonpatch import (
    UNBOUNDED,
    PatchError,
    PatchLimits,
    PatchTooLarge,
    Sizer,
    apply_patch_sized,
)
from afhub.fitting.types import (
    BACKENDS,
    CALCULATORS,
    ENGINES,
    OPERATIONS,
    TEST_STATISTICS,
    FitSettings,
    FitTask,
)

#: workspace/patchset schema versions this service accepts (pyhf 0.7.6 ships 1.0.0)
SUPPORTED_SCHEMA_VERSIONS: tuple[str, ...] = ("1.0.0",)
OPTIMIZERS: tuple[str, ...] = ("scipy", "minuit")
NORMSYS_INTERPCODES: tuple[str, ...] = ("code1", "code4")
HISTOSYS_INTERPCODES: tuple[str, ...] = ("code0", "code2", "code4p")
#: modifier types with one parameter per bin of their channel
PER_BIN_MODIFIERS = frozenset({"shapesys", "staterror", "shapefactor"})
#: pyhf's default bounds of a ``normfactor`` (used to check POI values when none are given)
NORMFACTOR_DEFAULT_BOUNDS = (0.0, 10.0)

REQUEST_KEYS = frozenset(
    {"workspace", "patchset", "patches", "patch_names", "operation", "measurement", "settings"}
)


class ValidationError(ValueError):
    """A request that cannot be served as sent; ``message`` is safe to show to its sender."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        #: the HTTP status to answer with: 413 for a request over a size or work limit
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        """JSON body for a 4xx answer."""
        return {"error": "invalid_request", "message": self.message, "field": self.field}


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for (configurable by the service)."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_depth: int = 64
    max_channels: int = 200
    max_bins: int = 10_000
    max_samples: int = 5_000
    max_parameters: int = 10_000
    max_patches: int = 10_000
    #: JSON Patch operations in one patch, and in all patches of a request
    max_patch_operations: int = 10_000
    max_operations: int = 100_000
    #: JSON values in a patched workspace, and those ``copy`` operations of one patch add
    max_document_nodes: int = 2_000_000
    max_copied_nodes: int = 100_000
    #: work per request: the JSON values of all patched workspaces together (about patches
    #: times workspace size; each patched workspace is checked whole)
    max_work_nodes: int = 25_000_000
    #: modifiers x samples x bins of a model: pyhf builds masks of that size for every fit,
    #: a product that a small body can make huge (500 M: about 0.5 GB and 10 s in pyhf)
    max_model_size: int = 500_000_000
    max_poi_values: int = 100
    max_scan_points: int = 201
    max_maxiter: int = 1_000_000
    max_string_in_message: int = 120


DEFAULT_LIMITS = Limits()


# --------------------------------------------------------------------------- helpers


def canonical_sha256(obj: Any) -> str:
    """sha256 (hex) of ``obj`` serialised with sorted keys and compact separators."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def installed_backends() -> tuple[str, ...]:
    """The pyhf backends usable in this environment."""
    have = {"numpy": True, "pytorch": importlib.util.find_spec("torch") is not None}
    return tuple(b for b in BACKENDS if have.get(b))


def installed_optimizers() -> tuple[str, ...]:
    """The pyhf optimizers usable in this environment."""
    have = {"scipy": True, "minuit": importlib.util.find_spec("iminuit") is not None}
    return tuple(o for o in OPTIMIZERS if have[o])


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --------------------------------------------------------------------------- raw body

#: a string (an unterminated one runs to the end of the text: a match never fails after a
#: long scan, so the scan is linear in the text, never quadratic) or a bracket
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')


def check_depth(text: str, max_depth: int) -> None:
    """Reject JSON text nested deeper than ``max_depth`` (iterative; never recurses)."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise ValidationError(
                    f"request JSON is nested more than {max_depth} levels deep", field="body"
                )
        elif char in "]}":
            depth -= 1


def _reject_constant(name: str) -> Any:
    raise ValidationError(
        f"request JSON contains the non-finite number literal {name}; only finite numbers "
        "are allowed",
        field="body",
    )


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError(
            f"request JSON contains the number {_short(text, 40)}, which overflows to infinity",
            field="body",
        )
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 300:
        raise ValidationError(
            f"request JSON contains an integer with {len(text)} digits; numbers must fit a "
            "double-precision float",
            field="body",
        )
    return int(text)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValidationError(
                    f"request JSON has the key {_short(key, 60)!r} twice in one object",
                    field="body",
                )
            seen.add(key)
    return result


def parse_body(body: bytes | str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse a request body into a JSON object, enforcing the raw-text checks."""
    size = len(body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body)
    if size > limits.max_body_bytes:
        raise ValidationError(
            f"request body is {size} bytes, over the limit of {limits.max_body_bytes} bytes",
            field="body",
            status=413,
        )
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"request body is not valid UTF-8 (bad byte at offset {exc.start})", field="body"
            ) from None
    else:
        text = body
    check_depth(text, limits.max_depth)
    try:
        payload = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field="body",
        ) from None
    except RecursionError:
        raise ValidationError("request JSON is nested too deeply", field="body") from None
    if re.search(r"\\u[dD][89a-fA-F]", text):
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                "request JSON contains an unpaired UTF-16 surrogate escape", field="body"
            ) from None
    if not isinstance(payload, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    return payload


# --------------------------------------------------------------------------- settings


def _as_float(value: Any, name: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValidationError(f"settings.{name} must be a finite number", field=f"settings.{name}")
    return float(value)


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(
            f"settings.{name} is {_short(value, 40)!r}; allowed: {', '.join(allowed)}",
            field=f"settings.{name}",
        )
    return value


def parse_settings(raw: Any, limits: Limits = DEFAULT_LIMITS) -> FitSettings:
    """Validate the ``settings`` object of a request (bounds of POI values are checked later)."""
    if raw is None:
        return FitSettings()
    if not isinstance(raw, dict):
        raise ValidationError("settings must be a JSON object", field="settings")
    known = {f.name for f in fields(FitSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValidationError(
            f"unknown setting(s): {', '.join(_short(k, 40) for k in unknown)}; known: "
            f"{', '.join(sorted(known))}",
            field="settings",
        )
    out: dict[str, Any] = {}
    if "test_stat" in raw:
        out["test_stat"] = _choice(raw["test_stat"], "test_stat", TEST_STATISTICS)
    if "calctype" in raw:
        out["calctype"] = _choice(raw["calctype"], "calctype", CALCULATORS)
    if "normsys_interpcode" in raw:
        out["normsys_interpcode"] = _choice(
            raw["normsys_interpcode"], "normsys_interpcode", NORMSYS_INTERPCODES
        )
    if "histosys_interpcode" in raw:
        out["histosys_interpcode"] = _choice(
            raw["histosys_interpcode"], "histosys_interpcode", HISTOSYS_INTERPCODES
        )
    if "optimizer" in raw:
        out["optimizer"] = _choice(raw["optimizer"], "optimizer", installed_optimizers())
    if "backend" in raw:
        out["backend"] = _choice(raw["backend"], "backend", installed_backends())
    if "engine" in raw:
        out["engine"] = _choice(raw["engine"], "engine", ENGINES)
    if raw.get("tolerance") is not None:
        tol = _as_float(raw["tolerance"], "tolerance")
        if tol <= 0:
            raise ValidationError("settings.tolerance must be > 0", field="settings.tolerance")
        out["tolerance"] = tol
    if "maxiter" in raw:
        maxiter = raw["maxiter"]
        if not isinstance(maxiter, int) or isinstance(maxiter, bool):
            raise ValidationError("settings.maxiter must be an integer", field="settings.maxiter")
        if not 1 <= maxiter <= limits.max_maxiter:
            raise ValidationError(
                f"settings.maxiter must be between 1 and {limits.max_maxiter}",
                field="settings.maxiter",
            )
        out["maxiter"] = maxiter
    if "level" in raw:
        level = _as_float(raw["level"], "level")
        if not 0 < level < 1:
            raise ValidationError("settings.level must be between 0 and 1", field="settings.level")
        out["level"] = level
    if "poi_values" in raw:
        values = raw["poi_values"]
        if _is_number(values):
            values = [values]
        if not isinstance(values, list) or not values:
            raise ValidationError(
                "settings.poi_values must be a non-empty list of numbers",
                field="settings.poi_values",
            )
        if len(values) > limits.max_poi_values:
            raise ValidationError(
                f"settings.poi_values has {len(values)} values, over the cap of "
                f"{limits.max_poi_values}",
                field="settings.poi_values",
            )
        out["poi_values"] = tuple(_as_float(v, "poi_values") for v in values)
    if "scan" in raw:
        out["scan"] = _parse_scan(raw["scan"], limits)
    return FitSettings(**out)


def _parse_scan(scan: Any, limits: Limits) -> tuple[float, float, int]:
    if not isinstance(scan, list) or len(scan) != 3:
        raise ValidationError("settings.scan must be [low, high, points]", field="settings.scan")
    low, high = _as_float(scan[0], "scan"), _as_float(scan[1], "scan")
    points = scan[2]
    if not low < high:
        raise ValidationError(
            f"settings.scan: low ({low}) must be below high ({high})", field="settings.scan"
        )
    if not isinstance(points, int) or isinstance(points, bool):
        raise ValidationError("settings.scan: points must be an integer", field="settings.scan")
    if not 2 <= points <= limits.max_scan_points:
        raise ValidationError(
            f"settings.scan: points must be between 2 and {limits.max_scan_points}",
            field="settings.scan",
        )
    return (low, high, points)


# --------------------------------------------------------------------------- workspace


def _schema_error(
    exc: pyhf.exceptions.InvalidSpecification, what: str, field: str
) -> ValidationError:
    """A readable message from pyhf's schema error, without the (possibly huge) instance."""
    parent = getattr(exc, "parent", None)
    detail = _short(getattr(parent, "message", "does not match the schema"), 160)
    where = getattr(exc, "path", "") or "(top level)"
    return ValidationError(
        f"{what} does not match pyhf's schema: {detail} (at {_short(where, 80)})", field=field
    )


def _check_version(spec: dict[str, Any], field: str, what: str) -> str:
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
    version = _check_version(spec, field, "workspace")
    try:
        pyhf.schema.validate(spec, "workspace.json", version=version)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise _schema_error(exc, "workspace", field) from None
    return version


@dataclass
class _Shape:
    """Counts and parameter sizes found while walking a workspace."""

    bins: int = 0
    samples: int = 0
    par_sizes: dict[str, int] | None = None
    par_types: dict[str, set[str]] | None = None


def _check_len(data: Any, n: int, where: str, what: str) -> None:
    if not isinstance(data, list) or len(data) != n:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ValidationError(f"{where}: {what} has {got} entries, expected {n}", field=where)
    if not all(_is_number(x) for x in data):
        raise ValidationError(f"{where}: {what} must contain only numbers", field=where)


def _walk_channels(spec: dict[str, Any], where: str, limits: Limits) -> _Shape:
    channels = spec.get("channels")
    if not isinstance(channels, list) or not channels:
        raise ValidationError(f"{where}: workspace has no channels", field=f"{where}.channels")
    if len(channels) > limits.max_channels:
        raise ValidationError(
            f"{where}: workspace has {len(channels)} channels, over the cap of "
            f"{limits.max_channels}",
            field=f"{where}.channels",
        )
    shape = _Shape(par_sizes={}, par_types={})
    for ci, channel in enumerate(channels):
        cw = f"{where}.channels[{ci}]"
        if not isinstance(channel, dict) or not isinstance(channel.get("samples"), list):
            raise ValidationError(f"{cw}: a channel needs a name and samples", field=cw)
        samples = channel["samples"]
        if not samples:
            raise ValidationError(f"{cw}: channel has no samples", field=cw)
        nbins = len(samples[0].get("data", [])) if isinstance(samples[0], dict) else 0
        if nbins == 0:
            raise ValidationError(f"{cw}: channel has no bins", field=cw)
        shape.bins += nbins
        shape.samples += len(samples)
        for si, sample in enumerate(samples):
            sw = f"{cw}.samples[{si}]"
            if not isinstance(sample, dict):
                raise ValidationError(f"{sw}: a sample must be an object", field=sw)
            _check_len(sample.get("data"), nbins, sw, "data")
            for mi, mod in enumerate(sample.get("modifiers") or []):
                _check_modifier(mod, nbins, f"{sw}.modifiers[{mi}]", shape)
        if shape.bins > limits.max_bins:
            raise ValidationError(
                f"{where}: workspace has more than {limits.max_bins} bins (the cap)",
                field=f"{where}.channels",
            )
        if shape.samples > limits.max_samples:
            raise ValidationError(
                f"{where}: workspace has more than {limits.max_samples} samples (the cap)",
                field=f"{where}.channels",
            )
    npars = sum(shape.par_sizes.values())
    if npars > limits.max_parameters:
        raise ValidationError(
            f"{where}: workspace has {npars} parameters, over the cap of {limits.max_parameters}",
            field=f"{where}.channels",
        )
    modifiers = sum(len(types) for types in shape.par_types.values())
    size = modifiers * shape.samples * shape.bins
    if size > limits.max_model_size:
        raise ValidationError(
            f"{where}: the model would have {modifiers} modifiers x {shape.samples} samples x "
            f"{shape.bins} bins = {size}, over the limit of {limits.max_model_size} (pyhf "
            "builds arrays of that size for every fit); split the channels over several "
            "workspaces or ask the operators to raise FittingService.max_model_size",
            field=f"{where}.channels",
            status=413,
        )
    return shape


def _check_modifier(mod: Any, nbins: int, mw: str, shape: _Shape) -> None:
    if not isinstance(mod, dict) or not isinstance(mod.get("name"), str):
        raise ValidationError(f"{mw}: a modifier needs a name and a type", field=mw)
    mtype, data = mod.get("type"), mod.get("data")
    if mtype == "histosys":
        if not isinstance(data, dict):
            raise ValidationError(f"{mw}: histosys data must be an object", field=mw)
        _check_len(data.get("hi_data"), nbins, mw, "hi_data")
        _check_len(data.get("lo_data"), nbins, mw, "lo_data")
    elif mtype in ("shapesys", "staterror"):
        _check_len(data, nbins, mw, f"{mtype} data")
    size = nbins if mtype in PER_BIN_MODIFIERS else 1
    name = mod["name"]
    known = shape.par_sizes.get(name)
    if known is not None and known != size:
        raise ValidationError(
            f"{mw}: modifier {_short(name, 60)!r} has {known} parameter(s) elsewhere, "
            f"here {size} ({mtype})",
            field=mw,
        )
    shape.par_types.setdefault(name, set()).add(str(mtype))
    shape.par_sizes[name] = size


def _select_measurement(spec: dict[str, Any], name: str | None, where: str) -> dict[str, Any]:
    measurements = spec.get("measurements") or []
    if not measurements:
        raise ValidationError(
            f"{where}: workspace has no measurements", field=f"{where}.measurements"
        )
    if name is None:
        return measurements[0]
    for measurement in measurements:
        if measurement.get("name") == name:
            return measurement
    raise ValidationError(
        f"measurement {_short(name, 60)!r} is not in the workspace; it has: "
        f"{', '.join(_short(m.get('name'), 40) for m in measurements[:10])}",
        field="measurement",
    )


def _check_observations(spec: dict[str, Any], where: str) -> None:
    observations = {
        o.get("name"): o.get("data") for o in spec.get("observations") or [] if isinstance(o, dict)
    }
    for channel in spec["channels"]:
        name = channel.get("name")
        nbins = len(channel["samples"][0]["data"])
        if name not in observations:
            raise ValidationError(
                f"{where}: channel {_short(name, 60)!r} has no observations",
                field=f"{where}.observations",
            )
        data = observations[name]
        if not isinstance(data, list) or len(data) != nbins:
            got = len(data) if isinstance(data, list) else 0
            raise ValidationError(
                f"{where}: observations of channel {_short(name, 60)!r} have {got} entries, "
                f"but the channel has {nbins} bins",
                field=f"{where}.observations",
            )


def _check_parameters(
    measurement: dict[str, Any], shape: _Shape, where: str
) -> tuple[float, float] | None:
    """Check parameter configs (bounds/inits); return the POI's bounds when known."""
    config = measurement.get("config") or {}
    poi = config.get("poi")
    mname = _short(measurement.get("name"), 60)
    if poi not in shape.par_sizes:
        raise ValidationError(
            f"{where}: the POI {_short(poi, 60)!r} of measurement {mname!r} is not a parameter "
            "of any modifier in the workspace",
            field=f"{where}.measurements",
        )
    if shape.par_sizes[poi] != 1:
        raise ValidationError(
            f"{where}: the POI {_short(poi, 60)!r} must be a single parameter, it has "
            f"{shape.par_sizes[poi]}",
            field=f"{where}.measurements",
        )
    poi_bounds = NORMFACTOR_DEFAULT_BOUNDS if "normfactor" in shape.par_types[poi] else None
    for pi, par in enumerate(config.get("parameters") or []):
        pw = f"{where}.measurements[{mname}].config.parameters[{pi}]"
        name = par.get("name")
        size = shape.par_sizes.get(name)
        bounds = par.get("bounds")
        if bounds is not None:
            if size is not None and len(bounds) != size:
                raise ValidationError(
                    f"{pw}: bounds of {_short(name, 60)!r} have {len(bounds)} entries, the "
                    f"parameter has {size}",
                    field=pw,
                )
            for pair in bounds:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValidationError(
                        f"{pw}: bounds of {_short(name, 60)!r} must be [low, high] pairs, got "
                        f"{_short(pair, 60)}",
                        field=pw,
                    )
                if not pair[0] < pair[1]:
                    raise ValidationError(
                        f"{pw}: bounds of {_short(name, 60)!r} are reversed or empty: low "
                        f"{pair[0]} must be below high {pair[1]}",
                        field=pw,
                    )
            if name == poi:
                poi_bounds = (float(bounds[0][0]), float(bounds[0][1]))
        inits = par.get("inits")
        if inits is not None:
            if size is not None and len(inits) != size:
                raise ValidationError(
                    f"{pw}: inits of {_short(name, 60)!r} have {len(inits)} entries, the "
                    f"parameter has {size}",
                    field=pw,
                )
            if bounds is not None:
                for value, (low, high) in zip(inits, bounds, strict=False):
                    if not low <= value <= high:
                        raise ValidationError(
                            f"{pw}: init {value} of {_short(name, 60)!r} is outside its bounds "
                            f"[{low}, {high}]",
                            field=pw,
                        )
        for key in ("auxdata", "sigmas"):
            if par.get(key) is not None and size is not None and len(par[key]) != size:
                raise ValidationError(
                    f"{pw}: {key} of {_short(name, 60)!r} have {len(par[key])} entries, the "
                    f"parameter has {size}",
                    field=pw,
                )
    return poi_bounds


def check_workspace_semantics(
    spec: dict[str, Any],
    settings: FitSettings,
    operation: str,
    measurement: str | None,
    limits: Limits = DEFAULT_LIMITS,
    where: str = "workspace",
) -> None:
    """Checks pyhf leaves out or does late, on a schema-valid (possibly patched) workspace."""
    shape = _walk_channels(spec, where, limits)
    _check_observations(spec, where)
    chosen = _select_measurement(spec, measurement, where)
    poi_bounds = _check_parameters(chosen, shape, where)
    if poi_bounds is None:
        return
    low, high = poi_bounds
    if operation == "hypotest":
        for value in settings.poi_values:
            if not low <= value <= high:
                raise ValidationError(
                    f"settings.poi_values: {value} is outside the POI's bounds [{low}, {high}]",
                    field="settings.poi_values",
                )
    if operation == "upper_limit" and (settings.scan[0] < low or settings.scan[1] > high):
        raise ValidationError(
            f"settings.scan [{settings.scan[0]}, {settings.scan[1]}] is outside the POI's "
            f"bounds [{low}, {high}]",
            field="settings.scan",
        )


# --------------------------------------------------------------------------- patches


def _patches_from_patchset(patchset: Any, limits: Limits) -> list[dict[str, Any]]:
    if not isinstance(patchset, dict):
        raise ValidationError("patchset must be a JSON object", field="patchset")
    version = _check_version(patchset, "patchset", "patchset")
    raw = patchset.get("patches")
    if isinstance(raw, list) and len(raw) > limits.max_patches:
        raise ValidationError(
            f"patchset has {len(raw)} patches, over the cap of {limits.max_patches}",
            field="patchset.patches",
        )
    try:
        parsed = pyhf.PatchSet(patchset, version=version)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise _schema_error(exc, "patchset", "patchset") from None
    except pyhf.exceptions.InvalidPatchSet as exc:
        raise ValidationError(
            f"patchset is invalid: {_short(str(exc), 200)}", field="patchset"
        ) from None
    return [{"name": p.name, "patch": list(p.patch)} for p in parsed.patches]


def _patches_from_list(raw: Any, version: str, limits: Limits) -> list[dict[str, Any]]:
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
        if not _schema_is_valid(ops, "jsonpatch.json", version):
            try:
                pyhf.schema.validate(ops, "jsonpatch.json", version=version)
            except pyhf.exceptions.InvalidSpecification as exc:
                raise _schema_error(exc, f"patches[{i}]", f"patches[{i}]") from None
            raise ValidationError(f"patches[{i}] is not a valid JSON Patch", field=f"patches[{i}]")
        out.append({"name": name, "patch": ops})
    names = [p["name"] for p in out]
    if len(set(names)) != len(names):
        raise ValidationError("patch names must be unique", field="patches")
    return out


def _select_patches(patches: list[dict[str, Any]], names: Any) -> list[dict[str, Any]]:
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
            f"patch_names: no patch named {_short(missing[0], 60)!r}", field="patch_names"
        )
    return [by_name[n] for n in dict.fromkeys(names)]


def patch_limits(limits: Limits) -> PatchLimits:
    """The JSON Patch caps of a request's :class:`Limits`."""
    return PatchLimits(
        max_operations=limits.max_patch_operations,
        max_nodes=limits.max_document_nodes,
        max_depth=limits.max_depth,
        max_copied_nodes=limits.max_copied_nodes,
    )


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
    return _apply_sized(workspace, patch, limits, sizer, base_nodes)[0]


def _apply_sized(
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
            f"patch {_short(patch['name'], 60)!r} is too large: {exc}", field="patches", status=413
        ) from None
    except PatchError as exc:
        raise ValidationError(
            f"patch {_short(patch['name'], 60)!r} does not apply to the workspace: {exc}",
            field="patches",
        ) from None


def _check_patch_work(patches: list[dict[str, Any]], base_nodes: int, limits: Limits) -> None:
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


# --------------------------------------------------------------------------- request


def validate_payload(payload: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> FitTask:
    """Validate an already-parsed request object into a :class:`FitTask`."""
    if not isinstance(payload, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    unknown = sorted(set(payload) - REQUEST_KEYS)
    if unknown:
        raise ValidationError(
            f"unknown request field(s): {', '.join(_short(k, 40) for k in unknown)}; known: "
            f"{', '.join(sorted(REQUEST_KEYS))}",
            field="body",
        )
    if "workspace" not in payload:
        raise ValidationError("request has no workspace", field="workspace")
    operation = payload.get("operation", "hypotest")
    if operation not in OPERATIONS:
        raise ValidationError(
            f"operation {_short(operation, 40)!r} is not supported; allowed: "
            f"{', '.join(OPERATIONS)}",
            field="operation",
        )
    measurement = payload.get("measurement")
    if measurement is not None and not isinstance(measurement, str):
        raise ValidationError("measurement must be a string", field="measurement")
    settings = parse_settings(payload.get("settings"), limits)

    workspace = payload["workspace"]
    version = validate_workspace_schema(workspace)
    if payload.get("patchset") is not None and payload.get("patches") is not None:
        raise ValidationError("send either patchset or patches, not both", field="patches")
    if payload.get("patchset") is not None:
        patches = _patches_from_patchset(payload["patchset"], limits)
        _verify_patchset_digest(payload["patchset"], workspace)
    elif payload.get("patches") is not None:
        patches = _patches_from_list(payload["patches"], version, limits)
    else:
        patches = []
    patches = _select_patches(patches, payload.get("patch_names"))

    if not patches:
        check_workspace_semantics(workspace, settings, operation, measurement, limits)
    sizer = Sizer()
    base_nodes = sizer.measure(workspace)[0]
    _check_patch_work(patches, base_nodes, limits)
    caps = patch_limits(limits)
    work = 0
    for patch in patches:
        patched, nodes = _apply_sized(workspace, patch, caps, sizer, base_nodes)
        work += nodes
        if work > limits.max_work_nodes:
            raise ValidationError(
                f"the patched workspaces hold more than {limits.max_work_nodes} JSON values in "
                "all (the limit of work per request, patches times workspace size); split the "
                "patches over several requests",
                field="patches",
                status=413,
            )
        where = f"workspace patched with {_short(patch['name'], 60)!r}"
        if not isinstance(patched, dict) or patched.get("version") != version:
            raise ValidationError(f"{where}: a patch may not change the version", field="patches")
        _validate_patched(patched, workspace, version, where)
        check_workspace_semantics(patched, settings, operation, measurement, limits, where)

    return FitTask(
        workspace=workspace,
        patches=tuple(copy.deepcopy(patches)),
        operation=operation,
        settings=settings,
        workspace_sha256=canonical_sha256(workspace),
        measurement=measurement,
    )


_VALIDATORS = threading.local()


def _schema_is_valid(spec: Any, schema_name: str, version: str) -> bool:
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


def _validate_patched(patched: Any, base: dict[str, Any], version: str, where: str) -> None:
    """Schema-check a patched workspace: fast on the changed parts, then (only when that
    fails) with pyhf on the whole, so the message points at the real location."""
    if not _schema_is_valid(_changed_parts(patched, base), "workspace.json", version):
        try:
            pyhf.schema.validate(patched, "workspace.json", version=version)
        except pyhf.exceptions.InvalidSpecification as exc:
            raise _schema_error(exc, where, "patches") from None
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


def _verify_patchset_digest(patchset: dict[str, Any], workspace: dict[str, Any]) -> None:
    digests = (patchset.get("metadata") or {}).get("digests") or {}
    expected = digests.get("sha256")
    if expected is not None and expected != pyhf.utils.digest(workspace, algorithm="sha256"):
        raise ValidationError(
            "patchset was made for a different workspace: its sha256 digest does not match",
            field="patchset.metadata.digests",
        )


def validate_request(body: bytes | str, limits: Limits = DEFAULT_LIMITS) -> FitTask:
    """Untrusted request bytes in, a validated :class:`FitTask` out (or ValidationError)."""
    return validate_payload(parse_body(body, limits), limits)
