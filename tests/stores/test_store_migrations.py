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
