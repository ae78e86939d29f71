"""A logging filter that takes credentials out of log lines.

JupyterHub scrubs ``?token=`` from the URL of the request it logs, but not a token inside
another parameter: ``GET /hub/home?token=X`` is redirected to
``/hub/login?next=%2Fhub%2Fhome%3Ftoken%3DX`` and that line carries the token,
URL-encoded. The hub's log handlers (terminal and ``$AFHUB_HOME/logs/jupyterhub.log``)
pass every record through :class:`ScrubSecrets`, which replaces the value of any
credential parameter, plain or URL-encoded (once or twice), by ``[secret]``.
"""

from __future__ import annotations

import logging
import re

from afhub.services.kit.bodies import CREDENTIAL_PARAMETERS

_EQUALS = r"(?:=|%3D|%253D)"
_SEPARATOR = r"(?:^|[?&;\s]|%3F|%26|%253F|%2526)"
_PATTERN = re.compile(
    rf"({_SEPARATOR}(?:{'|'.join(CREDENTIAL_PARAMETERS)}){_EQUALS})(?!\[secret\])([^&\s#\"'<>]+?)"
    rf"(?=%26|%2526|[&\s#\"'<>]|$)",
    re.IGNORECASE,
)


def scrub(text: str) -> str:
    """``text`` with the values of credential parameters replaced by ``[secret]``."""
    return _PATTERN.sub(lambda m: m.group(1) + "[secret]", text)


class ScrubSecrets(logging.Filter):
    """Rewrite a record whose message holds a credential (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (formatting may raise anything; the handler reports it)
            return True
        clean = scrub(message)
        if clean != message:
            record.msg = clean
            record.args = None
        return True
