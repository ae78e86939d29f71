"""Shared types of the fitting engines: what a fit is asked to do and what it reports.

Every engine (the pyhf reference engine and the batched torch engine) takes a
:class:`FitTask` and returns one :class:`PatchResult` per patch, in order. Results are plain
data (``to_dict`` gives JSON-safe dicts) so that the service can store and serve them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Operation = Literal["hypotest", "upper_limit", "fit"]
Status = Literal["converged", "not_converged", "failed", "unsupported"]

OPERATIONS: tuple[str, ...] = ("hypotest", "upper_limit", "fit")
TEST_STATISTICS: tuple[str, ...] = ("qtilde", "q")
CALCULATORS: tuple[str, ...] = ("asymptotics",)
BACKENDS: tuple[str, ...] = ("numpy", "pytorch")
ENGINES: tuple[str, ...] = ("auto", "pyhf", "batched")


@dataclass(frozen=True)
class FitSettings:
    """How to fit. Defaults match pyhf 0.7.6's defaults for ``hypotest``."""

    test_stat: str = "qtilde"
    calctype: str = "asymptotics"
    #: interpolation code for normsys modifiers (pyhf's default: ``code4``)
    normsys_interpcode: str = "code4"
    #: interpolation code for histosys modifiers (pyhf's default: ``code4p``)
    histosys_interpcode: str = "code4p"
    optimizer: str = "scipy"
    #: optimizer tolerance; ``None`` keeps the optimizer's own default
    tolerance: float | None = None
    maxiter: int = 100_000
    backend: str = "numpy"
    #: which engine to use: ``auto`` picks the batched engine where it supports the task
    engine: str = "auto"
    #: POI values for ``hypotest``
    poi_values: tuple[float, ...] = (1.0,)
    #: scan for ``upper_limit``: ``(low, high, points)``
    scan: tuple[float, float, int] = (0.0, 5.0, 41)
    #: CL used by ``upper_limit``
    level: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FitTask:
    """One unit of work: a background workspace, patches to apply, an operation."""

    workspace: dict[str, Any]
    #: each patch is ``{"name": str, "patch": [JSON Patch operations]}``; an empty list
    #: means "fit the workspace as it is"
    patches: tuple[dict[str, Any], ...] = ()
    operation: str = "hypotest"
    settings: FitSettings = field(default_factory=FitSettings)
    #: sha256 (hex) of the canonical workspace JSON, computed by the caller
    workspace_sha256: str = ""
    #: name of the measurement to use; ``None`` means the workspace's first
    measurement: str | None = None


@dataclass
class PatchResult:
    """The outcome for one patch (or for the bare workspace when there are no patches).

    ``values`` is filled only when ``status == "converged"``; a non-converged or
    non-finite fit never reports numbers as values, only ``diagnostics``.

    Values by operation:

    - ``hypotest``: ``{"poi_values": [...], "cls_obs": [...], "cls_exp": [[5 values], ...]}``
      (one entry per POI value; ``cls_exp`` is the -2..+2 sigma band)
    - ``upper_limit``: ``{"obs_limit": x, "exp_limits": [5 values], "poi_values": [...],
      "cls_obs": [...], "cls_exp": [[5], ...]}``
    - ``fit``: ``{"parameters": {name: [values...]}, "uncertainties": {name: [...]},
      "twice_nll": x}``
    """

    patch: str | None
    engine: str
    status: str
    values: dict[str, Any] = field(default_factory=dict)
    #: optimizer diagnostics: per fit ``success``, ``nit``, ``message``, ``fun``; and a
    #: human-readable ``reason`` when not converged, failed or unsupported
    diagnostics: dict[str, Any] = field(default_factory=dict)
    #: seconds: ``{"total": s, ...}``
    timings: dict[str, float] = field(default_factory=dict)
    #: ``{"pyhf": version, "backend": name, "backend_version": v, "workspace_sha256": h,
    #: "settings": {...}, "engine": name, "device": "cpu" | "cuda:0"}``
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the check that the reported minima are minima (``afhub.fitting.certificate``):
    #: ``{"ok": bool, "thresholds": {...}, "worst": {...}, "fits": [...], ...}``; a result is
    #: ``converged`` only with ``ok`` true
    certificate: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def all_finite(values: Any) -> bool:
    """True when every number in a nested structure of lists/dicts is finite."""
    if isinstance(values, bool):
        return True
    if isinstance(values, int | float):
        return math.isfinite(values)
    if isinstance(values, dict):
        return all(all_finite(v) for v in values.values())
    if isinstance(values, list | tuple):
        return all(all_finite(v) for v in values)
    return True
