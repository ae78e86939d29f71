"""Turn untrusted fit-request bytes into a validated :class:`~afhub.fitting.types.FitTask`.

One module per concern: :mod:`.body` (body safety), :mod:`.settings`, :mod:`.schema` (pyhf's
schemas, versions), :mod:`.workspace` (semantics), :mod:`.patches`, :mod:`.request` (the whole
request, in order), :mod:`.limits` and :mod:`.errors`; their public names are importable from
here.

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

from afhub.fitting.validation.body import check_depth, parse_body
from afhub.fitting.validation.errors import ValidationError
from afhub.fitting.validation.limits import DEFAULT_LIMITS, Limits, patch_limits
from afhub.fitting.validation.patches import apply_patch
from afhub.fitting.validation.request import (
    REQUEST_KEYS,
    canonical_sha256,
    validate_payload,
    validate_request,
)
from afhub.fitting.validation.schema import SUPPORTED_SCHEMA_VERSIONS, validate_workspace_schema
from afhub.fitting.validation.settings import (
    HISTOSYS_INTERPCODES,
    NORMSYS_INTERPCODES,
    OPTIMIZERS,
    installed_backends,
    installed_optimizers,
    parse_settings,
)
from afhub.fitting.validation.workspace import (
    NORMFACTOR_DEFAULT_BOUNDS,
    PER_BIN_MODIFIERS,
    check_workspace_semantics,
)

__all__ = [
    "DEFAULT_LIMITS",
    "HISTOSYS_INTERPCODES",
    "NORMFACTOR_DEFAULT_BOUNDS",
    "NORMSYS_INTERPCODES",
    "OPTIMIZERS",
    "PER_BIN_MODIFIERS",
    "REQUEST_KEYS",
    "SUPPORTED_SCHEMA_VERSIONS",
    "Limits",
    "ValidationError",
    "apply_patch",
    "canonical_sha256",
    "check_depth",
    "check_workspace_semantics",
    "installed_backends",
    "installed_optimizers",
    "parse_body",
    "parse_settings",
    "patch_limits",
    "validate_payload",
    "validate_request",
    "validate_workspace_schema",
]
