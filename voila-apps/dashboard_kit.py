"""What the dashboards share: the facility's services over HTTP as the viewer, messages,
plots and downloads.

A dashboard's kernel holds its viewer's own OAuth token (``JUPYTERHUB_API_TOKEN``, handed
over by the dashboards service at page view) and the services' URLs
(``AFHUB_FACILITY_URL``, ``AFHUB_FITTING_URL``); every call here is made with that token,
so a kernel sees exactly what its viewer may see.
"""

from __future__ import annotations

import base64
import html
import os
from typing import Any
from urllib.parse import parse_qs

import ipywidgets as widgets
import plotly.io as pio
import requests
from IPython.display import display

# figures go to the page as plotly's MIME bundle (Voila renders it with plotly's own
# JupyterLab extension; no script from a CDN)
pio.renderers.default = "plotly_mimetype"

STYLE = """<style>
.afhub-table {border-collapse: collapse; margin: 0.5em 0;}
.afhub-table th, .afhub-table td {border-bottom: 1px solid #ddd; padding: 2px 10px;
  text-align: right;}
.afhub-table th:first-child, .afhub-table td:first-child {text-align: left;}
.afhub-message {padding: 0.6em 1em; border-radius: 4px; margin: 0.5em 0;}
.afhub-info {background: #eef4fb;} .afhub-error {background: #fdecea; color: #8a1c12;}
</style>"""


class ServiceError(Exception):
    """A service answered with an error; ``status`` and the service's own ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def service_url(name: str) -> str:
    """``facility`` or ``fitting``: the service's public URL, ending with ``/``."""
    url = os.environ.get(f"AFHUB_{name.upper()}_URL", "")
    if not url:
        raise ServiceError(0, f"this kernel was not told where the {name} service is")
    return url if url.endswith("/") else url + "/"


def call(service: str, path: str, *, method: str = "GET", **kwargs: Any) -> requests.Response:
    """An API call to ``service`` as the viewer; :class:`ServiceError` on a 4xx/5xx."""
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    headers = {"Authorization": f"token {token}"}
    response = requests.request(
        method, service_url(service) + "api/" + path, headers=headers, timeout=120, **kwargs
    )
    if response.status_code >= 400:
        try:
            message = response.json().get("error") or response.reason
        except ValueError:
            message = response.reason
        raise ServiceError(response.status_code, str(message))
    return response


def facility(path: str, **params: Any) -> Any:
    """GET a facility API resource as JSON."""
    return call("facility", path, params=params).json()


def query() -> dict[str, str]:
    """The page's query string (Voila passes it to the kernel as ``QUERY_STRING``)."""
    parsed = parse_qs(os.environ.get("QUERY_STRING", ""))
    return {key: values[-1] for key, values in parsed.items()}


def message(text: str, kind: str = "info") -> widgets.HTML:
    """A box with ``text`` (escaped: names from the database render as text)."""
    return widgets.HTML(f'{STYLE}<div class="afhub-message afhub-{kind}">{html.escape(text)}</div>')


def error(exc: ServiceError) -> widgets.HTML:
    if exc.status == 403:
        return message(f"Not allowed (403): {exc.message}", "error")
    return message(f"The service answered {exc.status}: {exc.message}", "error")


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> widgets.HTML:
    """An HTML table of ``rows``; ``columns`` are ``(key, heading)``; every value escaped."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(key)))}</td>" for key, _ in columns)
        for row in rows
    )
    return widgets.HTML(f'{STYLE}<table class="afhub-table"><tr>{head}</tr>{body}</table>')


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        # small numbers (CLs, p-values) keep their significant digits
        return f"{value:,.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def download(label: str, filename: str, data: bytes, mime: str) -> widgets.HTML:
    """A link that saves ``data`` as ``filename`` (a data: URL; no second request)."""
    encoded = base64.b64encode(data).decode()
    return widgets.HTML(
        f'<a download="{html.escape(filename)}" href="data:{mime};base64,{encoded}">'
        f"{html.escape(label)}</a>"
    )


def figure(fig: Any) -> widgets.Output:
    """A plotly figure in an output area."""
    out = widgets.Output()
    with out:
        fig.show()
    return out


def refresh(out: widgets.Output, build) -> None:
    """Replace what ``out`` shows with ``build()``'s widget, or with the service's error."""
    try:
        shown = build()
    except ServiceError as exc:
        shown = error(exc)
    out.clear_output(wait=True)
    with out:
        display(shown)
