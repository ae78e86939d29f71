"""The caps on what one fit request may ask for (the service configures them)."""

from __future__ import annotations

from dataclasses import dataclass

from afhub.fitting.jsonpatch import PatchLimits


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


def patch_limits(limits: Limits) -> PatchLimits:
    """The JSON Patch caps of a request's :class:`Limits`."""
    return PatchLimits(
        max_operations=limits.max_patch_operations,
        max_nodes=limits.max_document_nodes,
        max_depth=limits.max_depth,
        max_copied_nodes=limits.max_copied_nodes,
    )
