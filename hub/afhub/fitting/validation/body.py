"""Body safety: the raw request bytes to a JSON object, refusing what could cost too much or
mean two things (size, UTF-8, nesting depth scanned before parsing, non-finite and overflowing
numbers, duplicate keys, unpaired surrogates)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from afhub.fitting.validation.errors import ValidationError, short
from afhub.fitting.validation.limits import DEFAULT_LIMITS, Limits

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
            f"request JSON contains the number {short(text, 40)}, which overflows to infinity",
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
                    f"request JSON has the key {short(key, 60)!r} twice in one object",
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
