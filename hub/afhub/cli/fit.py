"""``afhub fit submit|status|results|cancel``: the fitting service from the command line.

The token is ``--token`` or ``$JUPYTERHUB_API_TOKEN``; the service is ``--url`` (the
facility's URL, e.g. ``http://127.0.0.1:8000/``), else ``$AFHUB_FITTING_URL`` or
``$AFHUB_URL`` (inside a facility server nothing needs to be set). HTTP only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from afhub.client import FitClient, FitError, format_table


def _client(args: argparse.Namespace) -> FitClient:
    url = args.url.rstrip("/") + "/services/fitting/" if args.url else None
    return FitClient(url=url, token=args.token)


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise FitError(0, f"cannot read the {what} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise FitError(0, f"the {what} {path} is not valid JSON: {exc}") from None


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    workspace = _read_json(args.workspace, "workspace")
    patchset = _read_json(args.patchset, "patchset") if args.patchset else None
    patches = None
    if args.patch:
        patches = [{"name": Path(p).name, "patch": _read_json(p, "patch")} for p in args.patch]
    try:
        fit_settings = json.loads(args.settings) if args.settings else None
    except ValueError as exc:
        raise FitError(0, f"--settings is not valid JSON: {exc}") from None
    job_id = client.submit(
        workspace,
        patchset=patchset,
        patches=patches,
        operation=args.operation,
        settings=fit_settings,
        wall_seconds=args.wall_seconds,
    )
    print(job_id, flush=True)
    if args.wait:
        job = client.wait(job_id, timeout=args.timeout)
        print(f"{job_id}: {job['state']}" + (f" ({job['error']})" if job.get("error") else ""))
        print(format_table(client.table(job_id)))
        return 0 if job["state"] == "done" else 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    job = _client(args).status(args.job_id)
    progress = job["progress"]
    print(
        f"{job['id']}: {job['state']} ({progress['done']}/{progress['total']} patches)"
        + (f"; {job['error']}" if job.get("error") else "")
    )
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.json:
        print(json.dumps(client.results(args.job_id), indent=1))
    else:
        print(format_table(client.table(args.job_id)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job_id)
    print(f"{job['id']}: {job['state']}")
    return 0


def _guarded(handler):
    def run(args: argparse.Namespace, _settings: Any = None) -> int:
        try:
            return handler(args)
        except FitError as exc:
            print(f"afhub fit: {exc.message}", file=sys.stderr)
            return 2
        except TimeoutError as exc:
            print(f"afhub fit: {exc}", file=sys.stderr)
            return 3

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub fit ...`` to the main parser."""
    fit = subparsers.add_parser("fit", help="submit fits to the fitting service, read results")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the facility's URL (default: $AFHUB_URL)")
    common.add_argument("--token", help="JupyterHub API token (default: $JUPYTERHUB_API_TOKEN)")
    sub = fit.add_subparsers(dest="fit_command", required=True)

    submit = sub.add_parser("submit", parents=[common], help="submit a workspace")
    submit.add_argument("workspace", help="pyhf workspace JSON file")
    submit.add_argument("--patchset", help="pyhf patchset JSON file")
    submit.add_argument(
        "--patch", action="append", help="a JSON Patch file (repeatable; instead of --patchset)"
    )
    submit.add_argument(
        "--operation", default="hypotest", choices=["hypotest", "upper_limit", "fit"]
    )
    submit.add_argument("--settings", help='settings as JSON, e.g. \'{"engine": "pyhf"}\'')
    submit.add_argument("--wall-seconds", type=float, help="per-fit wall-clock limit")
    submit.add_argument("--wait", action="store_true", help="wait and print the results table")
    submit.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits")
    submit.set_defaults(handler=_guarded(cmd_submit))

    status = sub.add_parser("status", parents=[common], help="state and progress of a job")
    status.add_argument("job_id")
    status.set_defaults(handler=_guarded(cmd_status))

    results = sub.add_parser("results", parents=[common], help="the results table of a job")
    results.add_argument("job_id")
    results.add_argument("--json", action="store_true", help="full results with provenance")
    results.set_defaults(handler=_guarded(cmd_results))

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=_guarded(cmd_cancel))
