"""The tutorials' placement in a home (afhub.spawners.tutorials), without a facility: first
start, an edited copy kept, a deleted one not brought back, an unchanged one refreshed, a
user's own file of the same name untouched; and the hub home page's list of tutorials is
the folder's."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys

import pytest

from afhub.spawners import tutorials
from afhub.web import TEMPLATES
from tests.house import ROOT

NAMES = sorted(p.name for p in tutorials.REPOSITORY_FOLDER.glob("*.ipynb"))


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "a.ipynb").write_text('{"v": 1}')
    (folder / "b.ipynb").write_text('{"v": 1}')
    (folder / "notes.txt").write_text("not a notebook")
    return folder


def test_the_five_tutorials_ship_with_the_repository():
    assert NAMES == [
        "01-first-login-and-jupyterlab.ipynb",
        "02-my-groups-and-quota.ipynb",
        "03-scale-out-with-dask-gateway.ipynb",
        "04-fit-as-a-service.ipynb",
        "05-gpu-notebook-with-torch.ipynb",
    ]


def test_the_home_page_links_every_tutorial():
    template = (TEMPLATES / "home.html").read_text()
    listed = re.findall(r'\("(\d\d-[a-z0-9-]+)", "', template)
    assert [f"{name}.ipynb" for name in listed] == NAMES
    assert "lab/tree/tutorials/{{ name }}.ipynb" in template


def test_first_start_places_every_notebook_privately(source, tmp_path):
    home = tmp_path / "home"
    assert tutorials.place(home, source) == ["a.ipynb", "b.ipynb"]
    assert sorted(p.name for p in (home / "tutorials").iterdir()) == ["a.ipynb", "b.ipynb"]
    assert stat.S_IMODE((home / "tutorials" / "a.ipynb").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    marker = json.loads((home / tutorials.MARKER).read_text())
    assert set(marker["placed"]) == {"a.ipynb", "b.ipynb"}
    assert tutorials.place(home, source) == []  # a second start changes nothing


def test_edited_kept_deleted_not_back_unchanged_refreshed(source, tmp_path):
    home = tmp_path / "home"
    tutorials.place(home, source)
    (home / "tutorials" / "a.ipynb").write_text('{"mine": true}')
    (home / "tutorials" / "b.ipynb").unlink()
    assert tutorials.place(home, source) == []
    assert (home / "tutorials" / "a.ipynb").read_text() == '{"mine": true}'
    assert not (home / "tutorials" / "b.ipynb").exists()

    (source / "a.ipynb").write_text('{"v": 2}')  # a newer afhub: the edit still wins
    (source / "c.ipynb").write_text('{"v": 1}')  # a new tutorial: placed
    assert tutorials.place(home, source) == ["c.ipynb"]
    assert (home / "tutorials" / "a.ipynb").read_text() == '{"mine": true}'

    (source / "c.ipynb").write_text('{"v": 2}')  # never edited: refreshed
    assert tutorials.place(home, source) == ["c.ipynb"]
    assert (home / "tutorials" / "c.ipynb").read_text() == '{"v": 2}'


def test_a_users_own_file_of_that_name_is_never_touched(source, tmp_path):
    home = tmp_path / "home"
    (home / "tutorials").mkdir(parents=True)
    (home / "tutorials" / "a.ipynb").write_text("my own")
    assert tutorials.place(home, source) == ["b.ipynb"]
    (source / "a.ipynb").write_text('{"v": 2}')
    assert tutorials.place(home, source) == []
    assert (home / "tutorials" / "a.ipynb").read_text() == "my own"


def test_a_broken_marker_is_read_as_nothing_placed(source, tmp_path):
    home = tmp_path / "home"
    (home / ".afhub").mkdir(parents=True)
    (home / tutorials.MARKER).write_text("not json")
    assert tutorials.place(home, source) == ["a.ipynb", "b.ipynb"]


def test_source_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AFHUB_TUTORIALS", str(tmp_path))
    assert tutorials.source_folder() == tmp_path
    monkeypatch.setenv("AFHUB_TUTORIALS", "")
    assert tutorials.source_folder() is None
    assert tutorials.place(tmp_path / "home") == []
    monkeypatch.delenv("AFHUB_TUTORIALS")
    assert tutorials.source_folder() in (tutorials.IMAGE_FOLDER, tutorials.REPOSITORY_FOLDER)


def test_the_images_start_hook_command(source, tmp_path):
    """What images/notebook-*/Dockerfile runs at container start."""
    home = tmp_path / "jovyan"
    done = subprocess.run(
        [sys.executable, "-m", "afhub.spawners.tutorials", str(source), str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "placed 2" in done.stdout
    assert (home / "tutorials" / "b.ipynb").is_file()


@pytest.mark.parametrize("image", ["notebook-cpu", "notebook-gpu"])
def test_the_notebook_images_carry_the_tutorials_and_the_hook(image):
    dockerfile = (ROOT / "images" / image / "Dockerfile").read_text()
    assert f"COPY --chown=1000:100 voila-apps/onboarding {tutorials.IMAGE_FOLDER}\n" in dockerfile
    hook = f'python -m afhub.spawners.tutorials {tutorials.IMAGE_FOLDER} \\"\\$HOME\\"'
    assert hook in dockerfile
    assert "/usr/local/bin/before-notebook.d/" in dockerfile
