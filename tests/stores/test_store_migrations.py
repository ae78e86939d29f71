import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from afhub.stores.database import Database, default_url
from afhub.stores.migrate import downgrade, import_all_models, upgrade
from afhub.stores.models import Base


def test_migrations_match_the_models(db_url):
    import_all_models()
    db = Database(db_url)
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    db.dispose()


def test_upgrade_from_empty_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'x' / 'afhub.sqlite'}"
    upgrade(url)
    db = Database(url)
    assert "afhub_ledger" in inspect(db.engine).get_table_names()
    db.dispose()
    downgrade(url, "base")
    db = Database(url)
    assert not [t for t in inspect(db.engine).get_table_names() if t.startswith("afhub_")]
    upgrade(url)  # and forward again
    db.dispose()


def test_sqlite_pragmas(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'p.sqlite'}")
    with db.read() as session:
        conn = session.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    db.dispose()


def test_default_url(monkeypatch, tmp_path):
    monkeypatch.delenv("AFHUB_DB_URL", raising=False)
    monkeypatch.setenv("AFHUB_HOME", str(tmp_path))
    assert default_url() == f"sqlite:///{tmp_path}/afhub.sqlite"
    monkeypatch.setenv("AFHUB_DB_URL", "postgresql+psycopg2://u@h/db")
    assert default_url() == "postgresql+psycopg2://u@h/db"


def test_processes_starting_together_migrate_one_after_the_other(tmp_path):
    url = f"sqlite:///{tmp_path / 'together.sqlite'}"
    code = "import sys; from afhub.stores.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    db = Database(url)
    assert "afhub_ledger" in inspect(db.engine).get_table_names()
    db.dispose()


def test_0005_gives_invitations_random_ids_and_orphan_charges_an_identity(tmp_path):
    """Existing data stays correct: invitations get random ids; a charge of a deleted group
    goes to the deepest ancestor that existed when it was admitted, never to a group made
    later under a deleted name."""
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0004_devices")
    db = Database(url)
    old, new = "2026-01-01 00:00:00", "2026-06-01 00:00:00"
    jan, mar = 1767225600.0, 1772323200.0  # 2026-01-01, 2026-03-01 (UTC)
    with db.engine.begin() as conn:
        for gid, path, parent, created in [
            (1, "atlas", None, old),
            (2, "atlas/higgs", 1, new),  # made again after its namesake was deleted
            (3, "cms", None, new),  # made again: the old cms is gone
        ]:
            conn.execute(
                text(
                    "INSERT INTO afhub_groups (id, path, name, parent_id, depth, created_at) "
                    "VALUES (:i, :p, :n, :par, :d, :c)"
                ),
                {
                    "i": gid,
                    "p": path,
                    "n": path.rsplit("/")[-1],
                    "par": parent,
                    "d": path.count("/") + 1,
                    "c": created,
                },
            )
        for lid, path in [(1, "atlas/higgs/students"), (2, "cms"), (3, "atlas/higgs")]:
            conn.execute(
                text(
                    "INSERT INTO afhub_ledger (id, user_name, group_id, group_path, kind, "
                    "resource, server_name, cpu_cores, gpus, state, admitted_ts, start_ts, "
                    "stop_ts, note) VALUES (:i, 'u', NULL, :p, 'server', '', '', 1, 0, "
                    "'closed', :a, :a, :a + 60, '')"
                ),
                {"i": lid, "p": path, "a": mar if lid == 1 else jan},
            )
        for iid in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO afhub_invitations (id, group_id, token_hash, role, expires_at, "
                    "max_uses, uses_left, created_at) VALUES (:i, 1, :h, 'member', :c, 1, 1, :c)"
                ),
                {"i": iid, "h": str(iid) * 64, "c": old},
            )
    db.dispose()
    upgrade(url)
    db = Database(url)
    with db.engine.connect() as conn:
        orphans = dict(conn.execute(text("SELECT id, orphan_of_id FROM afhub_ledger")).all())
        ids = [r[0] for r in conn.execute(text("SELECT public_id FROM afhub_invitations"))]
    db.dispose()
    # students (March): atlas/higgs was made in June, after it: the charge goes to atlas
    # cms (January): the cms of today was made in June: no group has it
    # the old atlas/higgs (January): the new one is not it; atlas is
    assert orphans == {1: 1, 2: None, 3: 1}
    assert len(set(ids)) == 2
    assert all(len(i) == 22 and i.isalnum() for i in ids)
    downgrade(url, "0004_devices")  # and back
    upgrade(url)


def test_a_new_sqlite_database_is_private_whatever_the_umask(tmp_path):
    """Issue 11, finding 7: SQLite creates its file with the process umask (0644)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        url = f"sqlite:///{tmp_path / 'new' / 'afhub.sqlite'}"
        upgrade(url)
        db = Database(url)
        with db.write() as session:
            session.connection().exec_driver_sql("CREATE TABLE t (x)")
        db.dispose()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    for path in (tmp_path / "new").iterdir():  # the database, its -wal and -shm files
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_cli_creates_no_database_before_the_first_up(tmp_path):
    """``afhub groups create`` before the first ``afhub up`` made a 0644 database; now a
    command never creates a facility (issue 13): it refuses, and the home stays empty."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AFHUB_")}
    env["AFHUB_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.umask(0o022); from afhub.cli import main; "
            "sys.exit(main(['groups', 'create', 'atlas']))",
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no facility in" in done.stderr
    assert not (tmp_path / "home").exists()


def test_sqlite_upgrade_is_one_transaction(tmp_path):
    """The version read and every revision commit together: with a commit per revision a
    second process starting together read a version part-way and ran a revision twice."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    commits = []

    def count(_connection):
        commits.append(1)

    event.listen(Engine, "commit", count)
    try:
        upgrade(f"sqlite:///{tmp_path / 'one.sqlite'}")
    finally:
        event.remove(Engine, "commit", count)
    assert len(commits) == 1
