"""Workspace semantics pyhf does not check or checks late, on a schema-valid (possibly patched)
workspace: size caps, observations with one count per bin, per-bin modifier data of the right
length, the POI one parameter of the measurement, parameter ``bounds``/``inits`` of the right
shape and ordered, POI values and scan within the POI's bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from afhub.fitting.types import FitSettings
from afhub.fitting.validation.errors import ValidationError, is_number, short
from afhub.fitting.validation.limits import DEFAULT_LIMITS, Limits

#: modifier types with one parameter per bin of their channel
PER_BIN_MODIFIERS = frozenset({"shapesys", "staterror", "shapefactor"})
#: pyhf's default bounds of a ``normfactor`` (used to check POI values when none are given)
NORMFACTOR_DEFAULT_BOUNDS = (0.0, 10.0)


@dataclass
class _Shape:
    """Counts and parameter sizes found while walking a workspace."""

    bins: int = 0
    samples: int = 0
    par_sizes: dict[str, int] = field(default_factory=dict)
    par_types: dict[str, set[str]] = field(default_factory=dict)


def _check_len(data: Any, n: int, where: str, what: str) -> None:
    if not isinstance(data, list) or len(data) != n:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ValidationError(f"{where}: {what} has {got} entries, expected {n}", field=where)
    if not all(is_number(x) for x in data):
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
    shape = _Shape()
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
            f"{mw}: modifier {short(name, 60)!r} has {known} parameter(s) elsewhere, "
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
        f"measurement {short(name, 60)!r} is not in the workspace; it has: "
        f"{', '.join(short(m.get('name'), 40) for m in measurements[:10])}",
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
                f"{where}: channel {short(name, 60)!r} has no observations",
                field=f"{where}.observations",
            )
        data = observations[name]
        if not isinstance(data, list) or len(data) != nbins:
            got = len(data) if isinstance(data, list) else 0
            raise ValidationError(
                f"{where}: observations of channel {short(name, 60)!r} have {got} entries, "
                f"but the channel has {nbins} bins",
                field=f"{where}.observations",
            )


def _check_parameters(
    measurement: dict[str, Any], shape: _Shape, where: str
) -> tuple[float, float] | None:
    """Check parameter configs (bounds/inits); return the POI's bounds when known."""
    config: dict[str, Any] = measurement.get("config") or {}
    poi: Any = config.get("poi")  # a key of par_sizes once _check_poi passes
    mname = short(measurement.get("name"), 60)
    _check_poi(poi, mname, shape, where)
    poi_bounds = NORMFACTOR_DEFAULT_BOUNDS if "normfactor" in shape.par_types[poi] else None
    for pi, par in enumerate(config.get("parameters") or []):
        pw = f"{where}.measurements[{mname}].config.parameters[{pi}]"
        name = par.get("name")
        _check_parameter(par, shape.par_sizes.get(name), pw)
        bounds = par.get("bounds")
        if name == poi and bounds is not None:
            poi_bounds = (float(bounds[0][0]), float(bounds[0][1]))
    return poi_bounds


def _check_poi(poi: Any, mname: str, shape: _Shape, where: str) -> None:
    """The measurement's POI is one parameter of a modifier of the workspace."""
    if poi not in shape.par_sizes:
        raise ValidationError(
            f"{where}: the POI {short(poi, 60)!r} of measurement {mname!r} is not a parameter "
            "of any modifier in the workspace",
            field=f"{where}.measurements",
        )
    if shape.par_sizes[poi] != 1:
        raise ValidationError(
            f"{where}: the POI {short(poi, 60)!r} must be a single parameter, it has "
            f"{shape.par_sizes[poi]}",
            field=f"{where}.measurements",
        )


def _check_parameter(par: dict[str, Any], size: int | None, pw: str) -> None:
    """One parameter config: one entry per parameter in each list, ordered bounds, inits
    within them."""
    name = par.get("name")
    bounds, inits = par.get("bounds"), par.get("inits")
    _check_entries(par, "bounds", size, pw)
    if bounds is not None:
        for pair in bounds:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValidationError(
                    f"{pw}: bounds of {short(name, 60)!r} must be [low, high] pairs, got "
                    f"{short(pair, 60)}",
                    field=pw,
                )
            if not pair[0] < pair[1]:
                raise ValidationError(
                    f"{pw}: bounds of {short(name, 60)!r} are reversed or empty: low "
                    f"{pair[0]} must be below high {pair[1]}",
                    field=pw,
                )
    _check_entries(par, "inits", size, pw)
    if inits is not None and bounds is not None:
        for value, (low, high) in zip(inits, bounds, strict=False):
            if not low <= value <= high:
                raise ValidationError(
                    f"{pw}: init {value} of {short(name, 60)!r} is outside its bounds "
                    f"[{low}, {high}]",
                    field=pw,
                )
    for key in ("auxdata", "sigmas"):
        _check_entries(par, key, size, pw)


def _check_entries(par: dict[str, Any], key: str, size: int | None, pw: str) -> None:
    """``par[key]``, when given, has one entry per parameter (``size``, when known)."""
    values = par.get(key)
    if values is not None and size is not None and len(values) != size:
        raise ValidationError(
            f"{pw}: {key} of {short(par.get('name'), 60)!r} have {len(values)} entries, the "
            f"parameter has {size}",
            field=pw,
        )


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
