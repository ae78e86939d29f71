"""The ``settings`` object of a fit request, checked into :class:`FitSettings` (the bounds of
POI values are checked with the workspace, :mod:`.workspace`)."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from afhub.fitting.types import (
    BACKENDS,
    CALCULATORS,
    ENGINES,
    TEST_STATISTICS,
    FitSettings,
)
from afhub.fitting.validation.errors import ValidationError, check_known, is_number, short
from afhub.fitting.validation.limits import DEFAULT_LIMITS, Limits

OPTIMIZERS: tuple[str, ...] = ("scipy", "minuit")
NORMSYS_INTERPCODES: tuple[str, ...] = ("code1", "code4")
HISTOSYS_INTERPCODES: tuple[str, ...] = ("code0", "code2", "code4p")


def installed_backends() -> tuple[str, ...]:
    """The pyhf backends usable in this environment."""
    have = {"numpy": True, "pytorch": importlib.util.find_spec("torch") is not None}
    return tuple(b for b in BACKENDS if have.get(b))


def installed_optimizers() -> tuple[str, ...]:
    """The pyhf optimizers usable in this environment."""
    have = {"scipy": True, "minuit": importlib.util.find_spec("iminuit") is not None}
    return tuple(o for o in OPTIMIZERS if have[o])


def _as_float(value: Any, name: str) -> float:
    if not is_number(value) or not math.isfinite(value):
        raise ValidationError(f"settings.{name} must be a finite number", field=f"settings.{name}")
    return float(value)


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(
            f"settings.{name} is {short(value, 40)!r}; allowed: {', '.join(allowed)}",
            field=f"settings.{name}",
        )
    return value


#: the settings chosen from a list, in the order they are checked, with what each allows
_CHOICES: tuple[tuple[str, Callable[[], tuple[str, ...]]], ...] = (
    ("test_stat", lambda: TEST_STATISTICS),
    ("calctype", lambda: CALCULATORS),
    ("normsys_interpcode", lambda: NORMSYS_INTERPCODES),
    ("histosys_interpcode", lambda: HISTOSYS_INTERPCODES),
    ("optimizer", installed_optimizers),
    ("backend", installed_backends),
    ("engine", lambda: ENGINES),
)


def parse_settings(raw: Any, limits: Limits = DEFAULT_LIMITS) -> FitSettings:
    """Validate the ``settings`` object of a request (bounds of POI values are checked later)."""
    if raw is None:
        return FitSettings()
    _check_keys(raw)
    out: dict[str, Any] = {
        name: _choice(raw[name], name, allowed()) for name, allowed in _CHOICES if name in raw
    }
    if raw.get("tolerance") is not None:
        out["tolerance"] = _parse_tolerance(raw["tolerance"])
    if "maxiter" in raw:
        out["maxiter"] = _parse_maxiter(raw["maxiter"], limits)
    if "level" in raw:
        out["level"] = _parse_level(raw["level"])
    if "poi_values" in raw:
        out["poi_values"] = _parse_poi_values(raw["poi_values"], limits)
    if "scan" in raw:
        out["scan"] = _parse_scan(raw["scan"], limits)
    return FitSettings(**out)


def _check_keys(raw: Any) -> None:
    if not isinstance(raw, dict):
        raise ValidationError("settings must be a JSON object", field="settings")
    check_known(raw, (f.name for f in fields(FitSettings)), "setting(s)", "settings")


def _parse_tolerance(value: Any) -> float:
    tol = _as_float(value, "tolerance")
    if tol <= 0:
        raise ValidationError("settings.tolerance must be > 0", field="settings.tolerance")
    return tol


def _int_between(value: Any, low: int, high: int, what: str, field: str) -> int:
    """``value``, an integer from ``low`` to ``high`` (``what`` names it in the message)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{what} must be an integer", field=field)
    if not low <= value <= high:
        raise ValidationError(f"{what} must be between {low} and {high}", field=field)
    return value


def _parse_maxiter(maxiter: Any, limits: Limits) -> int:
    return _int_between(maxiter, 1, limits.max_maxiter, "settings.maxiter", "settings.maxiter")


def _parse_level(value: Any) -> float:
    level = _as_float(value, "level")
    if not 0 < level < 1:
        raise ValidationError("settings.level must be between 0 and 1", field="settings.level")
    return level


def _parse_poi_values(values: Any, limits: Limits) -> tuple[float, ...]:
    if is_number(values):
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
    return tuple(_as_float(v, "poi_values") for v in values)


def _parse_scan(scan: Any, limits: Limits) -> tuple[float, float, int]:
    if not isinstance(scan, list) or len(scan) != 3:
        raise ValidationError("settings.scan must be [low, high, points]", field="settings.scan")
    low, high = _as_float(scan[0], "scan"), _as_float(scan[1], "scan")
    points = scan[2]
    if not low < high:
        raise ValidationError(
            f"settings.scan: low ({low}) must be below high ({high})", field="settings.scan"
        )
    points = _int_between(
        points, 2, limits.max_scan_points, "settings.scan: points", "settings.scan"
    )
    return (low, high, points)
