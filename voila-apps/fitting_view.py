"""The fitting app: a workspace and patchset (uploaded, the generated example, or a
previous job), an operation, progress, then the table, an exclusion contour over the
grid's two mass parameters and downloads.

It submits to the fitting service with ``FitClient`` and the viewer's token: the job is the
viewer's, charged to the viewer's group.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from typing import Any

import dashboard_kit as kit
import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display

from afhub.client import FitClient, FitError
from afhub.fitting.examples import example_likelihood

OPERATIONS = ("hypotest", "upper_limit", "fit")
SOURCES = ("Example likelihood", "Upload", "Previous job")
#: the two numbers at the end of a patch name: ``sig_700_100`` -> (700, 100)
MASSES = re.compile(r"(-?\d+(?:\.\d+)?)[_x](-?\d+(?:\.\d+)?)$")
#: seconds between two progress polls
POLL = 0.5


def app() -> None:
    client = FitClient()
    source = widgets.ToggleButtons(options=SOURCES)
    workspace_file = widgets.FileUpload(accept=".json", description="Workspace")
    patchset_file = widgets.FileUpload(accept=".json", description="Patchset")
    jobs = widgets.Dropdown(description="Job", options=_previous(client))
    operation = widgets.Dropdown(description="Operation", options=OPERATIONS)
    run = widgets.Button(description="Run", button_style="primary")
    progress = widgets.IntProgress(description="Progress", min=0, max=1, value=0)
    status = widgets.HTML()
    out = widgets.Output()
    inputs = widgets.VBox()

    def show_inputs(_change: Any = None) -> None:
        choice = {"Upload": [workspace_file, patchset_file], "Previous job": [jobs]}
        inputs.children = choice.get(source.value, [])
        run.description = "Show" if source.value == "Previous job" else "Run"

    def go_(_button: Any) -> None:
        try:
            job_id = jobs.value if source.value == "Previous job" else _submit()
            if not job_id:
                status.value = "Pick a job first (you have no fits yet)."
                return
            _follow(client, job_id, progress, status)
            kit.refresh(out, lambda: results_view(client, job_id))
        except FitError as exc:
            shown = kit.message(f"Refused ({exc.status}): {exc.message}", "error")
            kit.refresh(out, lambda: shown)
        except ValueError as exc:
            shown = kit.message(str(exc), "error")
            kit.refresh(out, lambda: shown)

    def _submit() -> str:
        workspace, patchset = _documents(source.value, workspace_file, patchset_file)
        return client.submit(workspace, patchset=patchset, operation=operation.value)

    source.observe(show_inputs, "value")
    run.on_click(go_)
    show_inputs()
    hint = "" if jobs.options else "<p>No fits yet: run the example or upload a workspace.</p>"
    display(
        widgets.VBox(
            [
                widgets.HTML(f"<h2>Fitting</h2>{hint}"),
                source,
                inputs,
                widgets.HBox([operation, run]),
                progress,
                status,
                out,
            ]
        )
    )


def _previous(client: FitClient) -> list[tuple[str, str]]:
    try:
        return [(f"{j['id']} ({j['operation']}, {j['state']})", j["id"]) for j in client.jobs()]
    except FitError:
        return []


def _documents(source: str, workspace_file, patchset_file) -> tuple[dict, dict | None]:
    if source == "Example likelihood":
        example = example_likelihood()
        return example.workspace, example.patchset
    if not workspace_file.value:
        raise ValueError("Upload a workspace (a pyhf JSON file) first.")
    workspace = _json(workspace_file.value[0])
    patchset = _json(patchset_file.value[0]) if patchset_file.value else None
    return workspace, patchset


def _json(upload: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(bytes(upload["content"]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{upload['name']} is not a JSON file: {exc}") from None


def _follow(client: FitClient, job_id: str, progress, status) -> dict[str, Any]:
    while True:
        job = client.status(job_id)
        progress.max = max(1, job.get("patch_count") or 1)
        progress.value = job.get("done_count") or 0
        status.value = f"Job {job_id}: {job['state']}"
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(POLL)


def results_view(client: FitClient, job_id: str) -> widgets.Widget:
    rows = client.table(job_id)
    if not rows:
        return kit.message("This job has no results.")
    columns = sorted({key for row in rows for key in row}, key=_column_order)
    parts: list[widgets.Widget] = []
    contour = exclusion_figure(rows)
    if contour is not None:
        parts.append(kit.figure(contour))
    headings = [(c, f"{c} (median)" if c.startswith("cls_exp") else c) for c in columns]
    parts.append(kit.table([_shown(row) for row in rows], headings))
    raw = json.dumps(client.results(job_id), indent=1).encode()
    parts.append(kit.download("Download JSON", f"{job_id}.json", raw, "application/json"))
    parts.append(kit.download("Download CSV", f"{job_id}.csv", _csv(rows, columns), "text/csv"))
    return widgets.VBox(parts)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A table row as shown: an expected band (-2..+2 sigma) as its median."""
    return {
        key: value[len(value) // 2] if isinstance(value, list) and len(value) == 5 else value
        for key, value in row.items()
    }


def _column_order(name: str) -> tuple[int, str]:
    first = ("patch", "status", "engine")
    return (first.index(name), name) if name in first else (len(first), name)


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def exclusion_figure(rows: list[dict[str, Any]]) -> go.Figure | None:
    """CLs (observed) over the two masses in the patch names, with the 0.05 contour;
    ``None`` when the names carry no masses or there is no CLs."""
    points = []
    for row in rows:
        match = MASSES.search(str(row.get("patch") or ""))
        cls = row.get("cls_obs")
        if match and isinstance(cls, float):
            points.append((float(match.group(1)), float(match.group(2)), cls))
    if len(points) < 3:
        return None
    m1, m2, cls = zip(*points, strict=True)
    contour = go.Contour(
        x=m1,
        y=m2,
        z=cls,
        contours={"start": 0.05, "end": 0.05, "size": 1, "coloring": "lines"},
        line={"width": 3},
        name="CLs = 0.05",
        showscale=False,
    )
    scatter = go.Scatter(
        x=m1,
        y=m2,
        mode="markers",
        marker={"color": cls, "colorscale": "Viridis", "showscale": True},
        name="CLs observed",
    )
    return go.Figure(
        [scatter, contour],
        layout={"title": "Exclusion (CLs < 0.05)", "xaxis_title": "m1", "yaxis_title": "m2"},
    )
