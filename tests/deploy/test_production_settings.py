"""The documented production environment (deploy/env.example) passes Django's deployment
checks, and a weak SECRET_KEY stops the start-up with a message naming the variable."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from aivc_portal.settings import refuse_weak_secret_key

ROOT = Path(__file__).resolve().parents[2]


def production_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    # Only what a systemd unit would have: the test run's own variables (e.g. the browser
    # tests' DJANGO_ALLOW_ASYNC_UNSAFE) must not leak into the production check.
    environment = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            environment[key.strip()] = value.strip()
    environment.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
        SECRET_KEY_FILE=str(tmp_path / "secret_key"),
        AIVC_ENV_FILE="",
    )
    environment.update(overrides)
    return environment


def manage(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_env_example_ships_no_usable_secret_key():
    text = (ROOT / "deploy" / "env.example").read_text()
    assert "change-me" not in text
    # An empty line for deploy/install.sh to fill in with a generated key, never a value.
    assert [line for line in text.splitlines() if line.startswith("SECRET_KEY=")] == ["SECRET_KEY="]


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path):
    result = manage(production_environment(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "weak_key",
    ["change-me", "x" * 60, "short-but-random-Zq81", "django-insecure-" + secrets.token_urlsafe(50)],
    ids=["placeholder", "one-character", "short", "django-insecure"],
)
def test_weak_secret_keys_are_refused(weak_key):
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is too short or a placeholder"):
        refuse_weak_secret_key(weak_key)


def test_a_generated_key_passes():
    refuse_weak_secret_key(secrets.token_urlsafe(50))


def test_a_placeholder_key_stops_the_start_up_naming_the_variable(tmp_path):
    result = manage(production_environment(tmp_path, SECRET_KEY="change-me"), "check")
    assert result.returncode != 0
    assert "SECRET_KEY is too short or a placeholder" in result.stderr
    assert "change-me" not in result.stderr  # the key itself is never printed


def test_a_generated_key_file_is_accepted_when_no_key_is_set(tmp_path):
    environment = production_environment(tmp_path)
    del environment["SECRET_KEY"]
    result = manage(environment, "check")
    assert result.returncode == 0, result.stderr
