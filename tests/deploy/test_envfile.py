"""Every entry point sees the service's configuration (aivc_portal/envfile.py): manage.py,
the WSGI module and gunicorn's config read the env file named by AIVC_ENV_FILE, and without
DEBUG a missing DATABASE_URL stops them instead of creating a SQLite file."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from aivc_portal import envfile

ROOT = Path(__file__).resolve().parents[2]
PRINT_DATABASE = "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"


def bare_environment(**variables: str) -> dict[str, str]:
    """What a maintainer's shell has: no DATABASE_URL, no DEBUG, no key."""
    environment = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    environment.update(variables)
    return environment


def run(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def write_env_file(path: Path, **variables: str) -> Path:
    path.write_text("# the portal's settings\n\n" + "".join(f"{k}={v}\n" for k, v in variables.items()))
    return path


@pytest.fixture
def env_file(tmp_path) -> Path:
    return write_env_file(
        tmp_path / "env",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"sqlite:///{tmp_path / 'service.sqlite3'}",
        STATICFILES_STORAGE="django.contrib.staticfiles.storage.StaticFilesStorage",
    )


def test_manage_py_uses_the_database_the_env_file_names(env_file, tmp_path):
    result = run(
        bare_environment(AIVC_ENV_FILE=str(env_file)),
        "manage.py",
        "shell",
        "--no-imports",
        "-c",
        PRINT_DATABASE,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "service.sqlite3")


def test_a_variable_already_in_the_environment_wins_over_the_file(env_file, tmp_path):
    own = tmp_path / "own.sqlite3"
    result = run(
        bare_environment(AIVC_ENV_FILE=str(env_file), DATABASE_URL=f"sqlite:///{own}"),
        "manage.py",
        "shell",
        "--no-imports",
        "-c",
        PRINT_DATABASE,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(own)


def test_a_missing_env_file_stops_manage_py_naming_the_file(tmp_path):
    missing = tmp_path / "no-such-env"
    result = run(bare_environment(AIVC_ENV_FILE=str(missing)), "manage.py", "check")
    assert result.returncode != 0
    assert f"{missing} (AIVC_ENV_FILE) does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_debug_or_database_url_every_command_stops_naming_database_url(tmp_path):
    result = run(
        bare_environment(AIVC_ENV_FILE="", SECRET_KEY=secrets.token_urlsafe(50)),
        "manage.py",
        "bootstrap_host",
        "--name",
        "gpu2",
    )
    assert result.returncode != 0
    assert "aivc-portal: DATABASE_URL is not set and DEBUG is off" in result.stderr
    assert "no such table" not in result.stderr
    assert "Traceback" not in result.stderr


def test_the_web_server_refuses_to_start_without_database_url():
    result = run(
        bare_environment(AIVC_ENV_FILE="", SECRET_KEY=secrets.token_urlsafe(50)),
        "-c",
        "import aivc_portal.wsgi",
    )
    assert result.returncode != 0
    assert "DATABASE_URL is not set and DEBUG is off" in result.stderr


def test_debug_still_runs_on_sqlite_without_database_url():
    result = run(
        bare_environment(AIVC_ENV_FILE="", DEBUG="1"),
        "manage.py",
        "shell",
        "--no-imports",
        "-c",
        PRINT_DATABASE,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("db.sqlite3")


def test_gunicorn_reads_its_settings_from_the_env_file(tmp_path):
    env_file = write_env_file(tmp_path / "env", GUNICORN_BIND="127.0.0.1:8765", GUNICORN_TIMEOUT="123")
    result = run(
        bare_environment(AIVC_ENV_FILE=str(env_file)),
        "-c",
        "import runpy; c = runpy.run_path('deploy/gunicorn.conf.py'); print(c['bind'], c['timeout'])",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["127.0.0.1:8765", "123"]


def test_the_default_file_is_read_when_it_exists_and_aivc_env_file_is_unset(monkeypatch, tmp_path):
    default = write_env_file(tmp_path / "env", AIVC_TEST_SETTING="from the file")
    monkeypatch.setattr(envfile, "DEFAULT_ENV_FILE", default)
    monkeypatch.delenv("AIVC_ENV_FILE")
    monkeypatch.delenv("AIVC_TEST_SETTING", raising=False)
    assert envfile.load_env_file() == default
    assert os.environ["AIVC_TEST_SETTING"] == "from the file"


def test_no_default_file_means_no_file(monkeypatch, tmp_path):
    monkeypatch.setattr(envfile, "DEFAULT_ENV_FILE", tmp_path / "absent")
    monkeypatch.delenv("AIVC_ENV_FILE")
    assert envfile.load_env_file() is None


def test_an_empty_aivc_env_file_reads_none_even_when_the_default_exists(monkeypatch, tmp_path):
    monkeypatch.setattr(envfile, "DEFAULT_ENV_FILE", write_env_file(tmp_path / "env", DEBUG="1"))
    monkeypatch.setenv("AIVC_ENV_FILE", "")
    assert envfile.load_env_file() is None


def test_a_file_that_cannot_be_read_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("AIVC_ENV_FILE", str(tmp_path))  # a folder: reading it fails
    with pytest.raises(ImproperlyConfigured, match=f"configuration file {tmp_path} cannot be read"):
        envfile.load_env_file()


def test_a_malformed_line_is_refused_with_its_line_number(tmp_path):
    path = tmp_path / "env"
    with pytest.raises(ImproperlyConfigured, match=rf"{path}, line 3: expected NAME=value"):
        envfile.parse_env_file("DEBUG=0\n# fine\nALLOWED HOSTS=portal\n", path=path)


def test_quotes_around_a_whole_value_are_removed_and_comments_skipped(tmp_path):
    text = "# comment\n; also a comment\nSITE_NAME=\"AIVC Lab\"\nPASSWORD='a=b#c'\nEMPTY=\n"
    assert envfile.parse_env_file(text, path=tmp_path / "env") == {
        "SITE_NAME": "AIVC Lab",
        "PASSWORD": "a=b#c",
        "EMPTY": "",
    }
