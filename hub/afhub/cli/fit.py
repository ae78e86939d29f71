"""``afhub fit submit|status|results|cancel``: the fitting service from the command line.

The facility is ``--url`` (any of its addresses: the one ``afhub up`` printed, its root,
``.../services/fitting/``), else ``$AFHUB_FITTING_URL`` or ``$AFHUB_URL``, else the one of
the last ``afhub login``. The token is ``--token``, else ``$JUPYTERHUB_API_TOKEN``, else the
one ``afhub login`` kept for that facility. Inside a facility server nothing needs to be
set. HTTP only, with the person's own token.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import requests

from afhub.cli.parser import paragraph
from afhub.client import FitClient, FitError, format_table
from afhub.client.fitting import default_token, default_url, fitting_url


def _client(args: argparse.Namespace) -> FitClient:
    """The client for the facility and token the options, environment or login name, with
    a message in the CLI's words when one is missing."""
    try:
        url = fitting_url(args.url) if args.url else default_url()
    except FitError:
        raise FitError(
            0,
            "no facility address: give --url (the address `afhub up` printed), or run "
            "`afhub login URL` once",
        ) from None
    try:
        token = args.token or default_token(url)
    except FitError:
        root = url.removesuffix("services/fitting/")
        raise FitError(
            0, f"no token for {root}: run `afhub login {root}` or give --token"
        ) from None
    return FitClient(url=url, token=token)


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
        except requests.RequestException as exc:
            print(
                f"afhub fit: cannot reach the fitting service ({type(exc).__name__}): is the "
                "facility running, and is --url its address?",
                file=sys.stderr,
            )
            return 2
        except TimeoutError as exc:
            print(f"afhub fit: {exc}", file=sys.stderr)
            return 3

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub fit ...`` to the main parser."""
    what = "submit fits to the fitting service, read results"
    fit = subparsers.add_parser("fit", help=what, description=paragraph(__doc__, 1))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="any address of the facility, e.g. the one `afhub up` printed (default: "
        "$AFHUB_FITTING_URL, $AFHUB_URL, else the last `afhub login`)",
    )
    common.add_argument(
        "--token",
        help="your API token (default: $JUPYTERHUB_API_TOKEN, else the one `afhub login` kept)",
    )
    sub = fit.add_subparsers(dest="fit_command", required=True, metavar="COMMAND")

    submit = sub.add_parser("submit", parents=[common], help="submit a workspace")
    submit.add_argument("workspace", metavar="WORKSPACE", help="pyhf workspace JSON file")
    submit.add_argument("--patchset", metavar="FILE", help="pyhf patchset JSON file")
    submit.add_argument(
        "--patch",
        action="append",
        metavar="FILE",
        help="a JSON Patch file (repeatable; instead of --patchset)",
    )
    submit.add_argument(
        "--operation",
        default="hypotest",
        choices=["hypotest", "upper_limit", "fit"],
        help="what to compute for each patch (default: hypotest)",
    )
    submit.add_argument(
        "--settings", metavar="JSON", help='settings as JSON, e.g. \'{"engine": "pyhf"}\''
    )
    submit.add_argument(
        "--wall-seconds", type=float, metavar="S", help="per-fit wall-clock limit in seconds"
    )
    submit.add_argument("--wait", action="store_true", help="wait and print the results table")
    submit.add_argument(
        "--timeout", type=float, default=3600, metavar="S", help="seconds --wait waits (3600)"
    )
    submit.set_defaults(handler=_guarded(cmd_submit))

    status = sub.add_parser("status", parents=[common], help="state and progress of a job")
    status.add_argument("job_id", metavar="JOB_ID", help="the id `afhub fit submit` printed")
    status.set_defaults(handler=_guarded(cmd_status))

    results = sub.add_parser("results", parents=[common], help="the results table of a job")
    results.add_argument("job_id", metavar="JOB_ID", help="the id `afhub fit submit` printed")
    results.add_argument("--json", action="store_true", help="full results with provenance")
    results.set_defaults(handler=_guarded(cmd_results))

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id", metavar="JOB_ID", help="the id `afhub fit submit` printed")
    cancel.set_defaults(handler=_guarded(cmd_cancel))
