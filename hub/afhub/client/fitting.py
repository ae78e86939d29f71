"""``FitClient``: submit fits to the facility's fitting service and read the results.

Inside a user's server it needs no configuration: the token is ``$JUPYTERHUB_API_TOKEN``
and the service's URL ``$AFHUB_FITTING_URL`` (set by the facility), else derived from
``$JUPYTERHUB_PUBLIC_HUB_URL`` or ``$AFHUB_URL``. Elsewhere (a laptop), after ``afhub login
URL`` it needs none either: the URL and the token are the ones kept by the login
(:mod:`afhub.client.access`). Any address of the facility will do as ``url``: its root, the
``.../hub/login`` that ``afhub up`` prints, ``.../services/fitting/`` or its API::

    from afhub.client import FitClient

    fits = FitClient()
    job = fits.submit(workspace, patchset=patchset)
    fits.wait(job)
    print(fits.table(job))

HTTP only: it imports neither JupyterHub nor the facility's database.
"""

from __future__ import annotations

import os
import time
from typing import Any

import requests

from afhub.client.access import AccessError, service_url, stored_credential

SERVICE_PATH = "services/fitting/"
FINAL_STATES = ("done", "failed", "cancelled")


class FitError(RuntimeError):
    """The service refused a call; ``status`` is the HTTP status, ``str()`` its message."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.field = field


#: where the service's URL comes from when none is given, in this order
URL_VARIABLES = ("AFHUB_FITTING_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "AFHUB_URL")


def default_url() -> str:
    """The fitting service's base URL from the environment, else from the last ``afhub
    login`` (see the module docstring)."""
    for variable in URL_VARIABLES:
        if os.environ.get(variable):
            return fitting_url(os.environ[variable])
    stored = _stored()
    if stored is not None:
        return fitting_url(stored.url)
    raise FitError(
        0,
        "no fitting service URL: pass url=... (any address of the facility), run `afhub "
        "login URL` once, or set AFHUB_URL (inside a facility server it is set for you)",
    )


def fitting_url(url: str) -> str:
    """The fitting service's base URL from any address of the facility."""
    try:
        return service_url(url, "fitting")
    except AccessError as exc:
        raise FitError(0, str(exc)) from None


def _stored(url: str | None = None):
    try:
        return stored_credential(url)
    except AccessError as exc:
        raise FitError(0, str(exc)) from None


def default_token(url: str) -> str:
    """``$JUPYTERHUB_API_TOKEN``, else the token ``afhub login`` kept for ``url``'s
    facility."""
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if token:
        return token
    stored = _stored(url)
    if stored is not None:
        return stored.token
    raise FitError(
        0, "no API token: pass token=..., run `afhub login URL` once, or set JUPYTERHUB_API_TOKEN"
    )


class FitClient:
    """A client of the fitting service's REST API (``docs/fitting.md``)."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 120
    ) -> None:
        self.url = fitting_url(url) if url else default_url()
        self.token = token or default_token(self.url)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.request(method, self.url + "api/" + path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500] or response.reason}
        if response.status_code >= 400:
            raise FitError(response.status_code, str(body.get("error")), body.get("field"))
        return body

    # --- jobs -------------------------------------------------------------------------------

    def submit(
        self,
        workspace: dict[str, Any],
        patchset: dict[str, Any] | None = None,
        patches: list[Any] | None = None,
        *,
        operation: str = "hypotest",
        settings: dict[str, Any] | None = None,
        patch_names: list[str] | None = None,
        measurement: str | None = None,
        wall_seconds: float | None = None,
    ) -> str:
        """Submit a fit; returns the job id."""
        body: dict[str, Any] = {"workspace": workspace, "operation": operation}
        for key, value in (
            ("patchset", patchset),
            ("patches", patches),
            ("settings", settings),
            ("patch_names", patch_names),
            ("measurement", measurement),
        ):
            if value is not None:
                body[key] = value
        params = {"wall_seconds": wall_seconds} if wall_seconds is not None else None
        return self._call("POST", "jobs", json=body, params=params)["id"]

    def status(self, job_id: str) -> dict[str, Any]:
        """State and progress of a job."""
        return self._call("GET", f"jobs/{job_id}")

    def jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        """One's own jobs, newest first."""
        return self._call("GET", "jobs", params={"state": state} if state else None)["jobs"]

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """Per-patch results stored so far."""
        return self._call("GET", f"jobs/{job_id}/results")["results"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job."""
        return self._call("DELETE", f"jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 3600, poll: float = 0.5) -> dict[str, Any]:
        """Wait until the job has ended; returns its final status (TimeoutError after
        ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if job["state"] in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll)

    def table(self, job_id: str) -> list[dict[str, Any]]:
        """One row per patch: for ``hypotest``, CLs observed and the expected band at each POI
        value; for ``upper_limit`` the limits; for ``fit`` the POI-free summary. Patches that
        did not converge have ``status`` and ``reason`` and no numbers."""
        rows = []
        for r in self.results(job_id):
            row: dict[str, Any] = {"patch": r.get("patch"), "status": r["status"]}
            row["engine"] = r.get("engine")
            values = r.get("values") or {}
            if r["status"] != "converged":
                row["reason"] = (r.get("diagnostics") or {}).get("reason")
            elif "obs_limit" in values:
                row["obs_limit"] = values["obs_limit"]
                row["exp_limits"] = values["exp_limits"]
            elif "cls_obs" in values:
                for mu, obs, exp in zip(
                    values["poi_values"], values["cls_obs"], values["cls_exp"], strict=True
                ):
                    suffix = "" if len(values["poi_values"]) == 1 else f"@{mu:g}"
                    row[f"cls_obs{suffix}"] = obs
                    row[f"cls_exp{suffix}"] = exp
            elif "twice_nll" in values:
                row["twice_nll"] = values["twice_nll"]
            rows.append(row)
        return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :meth:`FitClient.table` rows."""
    if not rows:
        return "(no results)"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.6g}"
        if isinstance(value, list):
            return "[" + ", ".join(cell(v) for v in value) + "]"
        return "" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)
