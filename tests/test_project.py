"""Project-level checks: migrations apply on the SQLite default and nothing is missing."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "1"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_migrations_apply_on_sqlite_and_the_demo_seeds_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    assert manage("migrate", "--noinput", database_url=url).returncode == 0
    first = manage("seed_demo", database_url=url)
    assert first.returncode == 0, first.stderr
    assert "Created admin account 'admin' with password:" in first.stdout
    second = manage("seed_demo", database_url=url)
    assert second.returncode == 0 and "password" not in second.stdout


def test_every_model_change_has_a_migration(tmp_path):
    result = manage(
        "makemigrations", "--check", "--dry-run", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
