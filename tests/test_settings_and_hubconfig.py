"""Settings → JupyterHub configuration, checked on the objects produced (no hub started)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from traitlets.config import Config

from afhub.hubconfig import build_config
from afhub.passwords import ensure_admin_password
from afhub.settings import (
    ConfigFileError,
    FacilitySettings,
    SettingsError,
    load_config_file,
    load_settings,
)
from afhub.spawners.local import safe_name


@pytest.fixture
def env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AFHUB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AFHUB_HOME", str(tmp_path / "state"))
    return monkeypatch


@pytest.mark.usefixtures("env")
def test_defaults_are_local_login_on_port_8000(tmp_path):
    settings = FacilitySettings()
    assert settings.port == 8000
    assert settings.authenticator == "local"
    c = build_config(settings)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000/"
    assert c.JupyterHub.authenticator_class == "afhub-local"
    assert c.JupyterHub.spawner_class == "afhub-local"
    assert c.Spawner.default_url == "/lab"
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path / 'state' / 'jupyterhub.sqlite'}"
    assert c.AfhubLocalAuthenticator.admin_password_file == str(
        tmp_path / "state" / "admin-password"
    )


def test_environment_sets_ports_and_cilogon_is_one_setting(env):
    env.setenv("AFHUB_PORT", "9100")
    env.setenv("AFHUB_AUTHENTICATOR", "cilogon")
    c = build_config(FacilitySettings())
    assert c.JupyterHub.bind_url == "http://127.0.0.1:9100/"
    assert c.JupyterHub.authenticator_class == "afhub-cilogon"


@pytest.mark.parametrize(("value", "expected"), [("/af", "/af/"), ("af/", "/af/"), ("", "/")])
def test_base_url_goes_into_bind_url(env, value, expected):
    env.setenv("AFHUB_PORT", "9100")
    env.setenv("AFHUB_BASE_URL", value)
    settings = FacilitySettings()
    assert build_config(settings).JupyterHub.bind_url == f"http://127.0.0.1:9100{expected}"
    assert settings.public_url == f"http://127.0.0.1:9100{expected}"


def test_unknown_authenticator_is_refused(env):
    env.setenv("AFHUB_AUTHENTICATOR", "anything-goes")
    with pytest.raises(SettingsError, match="AFHUB_AUTHENTICATOR='anything-goes'"):
        load_settings()


@pytest.mark.usefixtures("env")
def test_yaml_config_overrides_and_reaches_other_classes(tmp_path):
    path = tmp_path / "afhub.yaml"
    path.write_text("FacilitySettings:\n  port: 8123\nAfhubLocalSpawner:\n  start_timeout: 33\n")
    overrides = load_config_file(path)
    settings = FacilitySettings(config=overrides)
    c = build_config(settings, overrides)
    assert c.JupyterHub.bind_url.endswith(":8123/")
    assert c.AfhubLocalSpawner.start_timeout == 33


@pytest.mark.parametrize(
    ("text", "problem"),
    [("a: [1, 2", "not valid YAML"), ("- just\n- a list\n", "must map class names")],
)
def test_malformed_yaml_config_is_a_clear_error(tmp_path, text, problem):
    path = tmp_path / "afhub.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=problem):
        load_config_file(path)


def test_cli_reports_bad_settings_without_traceback(env, capsys):
    from afhub.cli import main

    env.setenv("AFHUB_AUTHENTICATOR", "nope")
    assert main(["users", "list"]) == 2
    err = capsys.readouterr().err
    assert "AFHUB_AUTHENTICATOR='nope'" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("env")
def test_bad_value_in_yaml_config_is_a_settings_error():
    from afhub.settings import SettingsError, load_settings

    config = Config({"FacilitySettings": {"cull_timeout_gpu": -5}})
    with pytest.raises(SettingsError, match="cull_timeout_gpu"):
        load_settings(config)


def test_missing_yaml_config_is_empty(tmp_path):
    assert load_config_file(tmp_path / "nope.yaml") == Config()


def test_admin_password_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "admin-password"
    first, created = ensure_admin_password(path)
    assert created
    assert len(first) >= 20
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = ensure_admin_password(path)
    assert (again, created_again) == (first, False)
    other = tmp_path / "b" / "admin-password"
    assert ensure_admin_password(other)[0] != first


@pytest.mark.parametrize(
    ("a", "b"), [("user", "user-hyphen"), ("a.b", "a-2eb"), ("Ann", "ann"), ("x_y", "x-y")]
)
def test_home_folder_names_are_distinct_and_safe(a, b):
    assert safe_name(a) != safe_name(b)
    for name in (a, b):
        assert set(safe_name(name)) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_one_port_base_moves_every_port_and_two_bases_never_meet(env):
    env.setenv("AFHUB_PORT_BASE", "9000")
    c = build_config(FacilitySettings())
    assert c.JupyterHub.bind_url == "http://127.0.0.1:9000/"
    assert c.JupyterHub.hub_bind_url == "http://127.0.0.1:9081"
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:9001"
    urls = {s["name"]: s.get("url") for s in c.JupyterHub.services}
    assert urls["facility"] == "http://127.0.0.1:9082"
    assert urls["fitting"] == "http://127.0.0.1:9083"
    port_traits = [n for n in FacilitySettings.class_trait_names(config=True) if n.endswith("port")]

    def ports(base: str) -> set[int]:
        env.setenv("AFHUB_PORT_BASE", base)
        settings = FacilitySettings()
        return {getattr(settings, name) for name in port_traits}

    first, second = ports("8000"), ports("9000")
    assert len(first) == len(second) == len(port_traits)  # no two ports of one facility meet
    assert not first & second
    env.setenv("AFHUB_API_PORT", "7777")  # a port set on its own wins over the base
    assert FacilitySettings().api_port == 7777


ROOT = Path(__file__).resolve().parents[1]
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
#: AFHUB_ variables as the code names them (a prefix such as AFHUB_FIT_ is not one)
VARIABLE = re.compile(r"\bAFHUB_[A-Z0-9_]*[A-Z0-9]\b")


def test_docs_settings_page_is_generated_from_the_settings_help():
    from afhub.cli.settings import markdown

    assert SETTINGS_PAGE.read_text() == markdown(), (
        "docs/settings.md is out of date: run `afhub settings --markdown > docs/settings.md`"
    )


def test_every_afhub_variable_the_code_reads_or_sets_is_in_the_settings_page():
    documented = set(VARIABLE.findall(SETTINGS_PAGE.read_text()))
    used: dict[str, str] = {}
    for folder in ("hub", "extensions", "helm", "voila-apps"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".yml", ".json", ".tpl") and path.is_file():
                for name in VARIABLE.findall(path.read_text(errors="replace")):
                    used.setdefault(name, str(path.relative_to(ROOT)))
    missing = {name: where for name, where in used.items() if name not in documented}
    assert not missing, f"not in docs/settings.md: {missing}"
