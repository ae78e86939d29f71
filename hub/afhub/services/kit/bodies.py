"""Request bodies and URLs: the one JSON body parser of the hub services, with its limits,
and credentials kept out of URLs and logs."""

from __future__ import annotations

import json
import re
from typing import Any

from afhub.services.kit.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
#: deepest nesting of arrays and objects a JSON body may have (the deepest the facility API
#: reads is 3: a registry document's resources, a toleration in a resource, its fields)
MAX_BODY_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")

#: query parameters whose values are credentials (OAuth codes included: single use, but
#: nothing a log needs), kept out of every log of the hub services
CREDENTIAL_PARAMETERS = ("token", "access_token", "api_token", "code")
#: query parameters that carry credentials: refused (an OAuth code comes back in one)
URL_CREDENTIALS = frozenset(CREDENTIAL_PARAMETERS) - {"code"}
_SECRET_IN_URI = re.compile(
    rf"((?:[?&](?:{'|'.join(CREDENTIAL_PARAMETERS)})=)[^&#]*)|(/join/)[A-Za-z0-9_-]+",
    re.IGNORECASE,
)


def scrub_uri(uri: str) -> str:
    """``uri`` with credential parameters' values and invitation tokens of join links
    replaced by ``[secret]`` (for logs)."""

    def hide(match: re.Match) -> str:
        kept = match.group(1) or match.group(2)
        if match.group(1):
            kept = kept[: kept.index("=") + 1]
        return kept + "[secret]"

    return _SECRET_IN_URI.sub(hide, uri)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (0 for a scalar).

    One pass over the text with strings blanked out, so its cost is linear in the size of
    the body whatever the nesting (the JSON decoder itself recurses, and fails with a
    RecursionError on a deep enough body)."""
    depth = deepest = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRING.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def too_large(size: int, limit: int) -> ApiError:
    """The 413 of a body of ``size`` bytes over ``limit``."""
    return ApiError(413, f"request body is {size} bytes, over the limit of {limit} bytes")


def parse_json_body(
    raw: bytes | None,
    *,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int = MAX_BODY_DEPTH,
    required: bool = False,
) -> dict[str, Any]:
    """A request body as a JSON object, within the limits, else :class:`ApiError` (4xx)
    with a message that says what is wrong. The one body parser of the hub services.

    Limits, checked before the body is decoded: ``max_bytes`` (413) and nesting depth
    ``max_depth`` (400). NaN and Infinity are refused (not JSON); an empty body is ``{}``
    unless ``required``."""
    raw = raw or b""
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON object is required in the request body")
        return {}
    if len(raw) > max_bytes:
        raise too_large(len(raw), max_bytes)
    depth = json_depth(raw)
    if depth > max_depth:
        raise ApiError(
            400,
            f"the request body nests arrays and objects {depth} deep; the limit is {max_depth}",
        )
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(
            400, "the request body is not valid JSON (UTF-8; NaN and Infinity are not JSON)"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body
