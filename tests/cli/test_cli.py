"""The ``afhub`` command as a person meets it: the real entry point in a subprocess, from
any folder, with every error one line that says what to do next, and help everywhere."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from afhub.cli import build_parser
from afhub.cli.formatting import number

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def afhub(*argv: str, cwd: Path = PROJECT_ROOT, **env: str) -> subprocess.CompletedProcess:
    """Run ``afhub ARGV`` as a shell would, with no AFHUB_ variable but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AFHUB_", "JUPYTERHUB_"))}
    return subprocess.run(
        [sys.executable, "-m", "afhub", *argv],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr.startswith("afhub"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def settings_of(result: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    """``afhub settings`` output as {setting: (value, source)}."""
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()[1:]
    value, source, variable = (header.index(c) for c in ("VALUE", "SOURCE", "VARIABLE"))
    return {
        line[:value].strip(): (line[value:source].strip(), line[source:variable].strip())
        for line in lines
    }


def test_every_command_finds_the_same_home_and_never_creates_a_facility(tmp_path):
    # without AFHUB_HOME: the same home from the checkout and from docs/, never ./.afhub
    from_root = settings_of(afhub("settings"))["FacilitySettings.home"]
    from_docs = settings_of(afhub("settings", cwd=PROJECT_ROOT / "docs"))["FacilitySettings.home"]
    assert from_root == from_docs == (str(PROJECT_ROOT / ".afhub"), "default")
    assert not (PROJECT_ROOT / "docs" / ".afhub").exists()
    # a home with no facility: one line that says what to do, and nothing created
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    for argv in (
        ("groups", "list"),
        ("users", "list"),
        ("quota", "show", "atlas"),
        ("usage", "--group", "atlas", "--since", "2026-11-01"),
        ("resources", "list"),
    ):
        result = afhub(*argv, cwd=tmp_path, AFHUB_HOME=str(empty))
        one_line_error(result, f"no facility in {empty}", "afhub up", "AFHUB_HOME")
    assert list(empty.iterdir()) == []
    assert not (tmp_path / ".afhub").exists()
    # a database that cannot be opened: one line, no driver traceback
    result = afhub(
        "groups", "list", "--db-url", "postgresql+psycopg2://nobody@127.0.0.1:1/none", cwd=tmp_path
    )
    one_line_error(result, "cannot open the database")


def test_settings_say_value_and_source_and_ports_derive_from_one_base(tmp_path):
    (tmp_path / "afhub.yaml").write_text(yaml.safe_dump({"FacilitySettings": {"hub_port": 9999}}))
    rows = settings_of(afhub("settings", AFHUB_HOME=str(tmp_path), AFHUB_PORT_BASE="9000"))
    assert rows["FacilitySettings.port_base"] == ("9000", "environment")
    assert rows["FacilitySettings.port"] == ("9000", "default")
    assert rows["FacilitySettings.api_port"] == ("9082", "default")
    assert rows["FacilitySettings.gateway_proxy_port"] == ("9085", "default")
    assert rows["FacilitySettings.hub_port"] == ("9999", "file")
    assert rows["FacilitySettings.home"] == (str(tmp_path), "environment")
    assert rows["GatewaySettings.max_workers"] == ("100", "default")
    one_line_error(afhub("settings", AFHUB_PORT_BASE="80000"), "AFHUB_PORT_BASE=80000")


def _parsers(parser: argparse.ArgumentParser, name: str = "afhub"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _parsers(subparser, f"{name} {sub}")


def test_every_command_and_option_has_help_and_positionals_read_alike():
    missing, lower = [], []
    for name, parser in _parsers(build_parser()):
        if name.count(" ") == 1 and not parser.description:
            missing.append(f"{name} (description)")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {c.dest}" for c in action._choices_actions if not c.help]
                continue
            if not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}")
            metavar = action.metavar or action.dest
            if not action.option_strings and metavar != metavar.upper():
                lower.append(f"{name} {metavar}")
    assert not missing, f"without help: {missing}"
    assert not lower, f"positionals not in capitals: {lower}"
    helps = {name: " ".join(p.format_help().split()) for name, p in _parsers(build_parser())}
    assert "'none' removes" in helps["afhub quota set"]
    assert "time window" in helps["afhub usage"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["groups", "create"], "afhub groups create: the following arguments are required: PATH"),
        (
            ["quota", "set", "x", "--gpu-hours"],
            "afhub quota set: argument --gpu-hours: expected one",
        ),
        (["nope"], "afhub: argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_a_usage_error_is_one_line_that_says_where_to_read_more(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1
    assert err.strip().endswith("--help`)")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        (3.0, "3"),
        (2.5, "2.50"),
        (0.001, "0.001"),
        (0.0042, "0.0042"),
        (12.345, "12.35"),
    ],
)
def test_numbers_never_hide_a_small_budget(value, shown):
    assert number(value) == shown
