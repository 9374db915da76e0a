"""Directory-login settings (aivc_portal/directory_settings.py): start-up stops with a clear
message when LDAP is configured wrongly or python-ldap is missing, and never shows the bind
password."""

import importlib.util
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from aivc_portal.env import env_file_text

needs_python_ldap = pytest.mark.skipif(
    importlib.util.find_spec("ldap") is None, reason="python-ldap is not installed (requirements-ldap.txt)"
)
BIND_PASSWORD = "Bind-Secret-Not-In-Errors-5512"


def manage_check(env: dict, tmp_path, *, hide_ldap: bool = False) -> subprocess.CompletedProcess:
    path = ""
    if hide_ldap:
        # A package named ldap ahead of the real one, failing as an absent one would.
        (tmp_path / "ldap").mkdir()
        (tmp_path / "ldap" / "__init__.py").write_text("raise ImportError('No module named ldap')\n")
        path = str(tmp_path)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env={
            "SECRET_KEY": secrets.token_urlsafe(50),
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": path,
            "AIVC_ENV_FILE": "",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}",
            "LDAP_USER_SEARCH_BASE": "ou=people,dc=lab,dc=example",
            "LDAP_BIND_PASSWORD": BIND_PASSWORD,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_up_stops_clearly_when_ldap_is_configured_but_python_ldap_is_missing(tmp_path):
    result = manage_check({"LDAP_SERVER_URI": "ldap://127.0.0.1:389/"}, tmp_path, hide_ldap=True)
    assert result.returncode != 0
    assert "LDAP_SERVER_URI is set but python-ldap or django-auth-ldap is not installed" in result.stderr
    assert "requirements-ldap.txt" in result.stderr
    assert BIND_PASSWORD not in result.stderr + result.stdout


def test_without_a_directory_python_ldap_is_never_imported(tmp_path):
    result = manage_check({"LDAP_SERVER_URI": ""}, tmp_path, hide_ldap=True)
    assert result.returncode == 0, result.stderr


def directory(**changes) -> dict:
    from aivc_portal.directory_settings import directory_settings

    values = {
        "server_uri": "ldap://127.0.0.1:389/",
        "bind_dn": "cn=portal,dc=lab,dc=example",
        "bind_password": BIND_PASSWORD,
        "search_base": "ou=people,dc=lab,dc=example",
        "user_filter": "(uid=%(user)s)",
        "create_users": False,
        "start_tls": False,
        "timeout": 5,
    }
    return directory_settings(**(values | changes))


@needs_python_ldap
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"server_uri": "uni.example.edu"}, "LDAP_SERVER_URI='uni.example.edu' is not an ldap://"),
        ({"search_base": ""}, "LDAP_USER_SEARCH_BASE must name"),
        ({"user_filter": "(uid=%s)"}, "must contain %\\(user\\)s"),
    ],
)
def test_a_wrong_ldap_setting_stops_start_up_naming_it(changes, message):
    with pytest.raises(ImproperlyConfigured, match=message) as error:
        directory(**changes)
    assert BIND_PASSWORD not in str(error.value)


@needs_python_ldap
def test_only_maintainers_accounts_log_in_unless_the_lab_lets_the_directory_create_them():
    assert directory()["AUTH_LDAP_NO_NEW_USERS"] is True
    assert directory(create_users=True)["AUTH_LDAP_NO_NEW_USERS"] is False


def test_the_bind_password_may_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "bind.pw"
    secret.write_text(BIND_PASSWORD + "\n")
    monkeypatch.setenv("LDAP_BIND_PASSWORD_FILE", str(secret))
    assert env_file_text("LDAP_BIND_PASSWORD_FILE") == BIND_PASSWORD


def test_an_unreadable_password_file_names_the_variable_and_path(monkeypatch, tmp_path):
    monkeypatch.setenv("LDAP_BIND_PASSWORD_FILE", str(tmp_path / "missing.pw"))
    with pytest.raises(ImproperlyConfigured, match=r"LDAP_BIND_PASSWORD_FILE: cannot read .*missing\.pw"):
        env_file_text("LDAP_BIND_PASSWORD_FILE")


@needs_python_ldap
def test_a_configured_directory_passes_the_checks_and_asks_the_directory_before_local_passwords(tmp_path):
    script = "from django.conf import settings; print(settings.AUTHENTICATION_BACKENDS)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=settings.BASE_DIR,
        env={
            "SECRET_KEY": secrets.token_urlsafe(50),
            "PATH": "/usr/bin:/bin",
            "AIVC_ENV_FILE": "",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}",
            "LDAP_SERVER_URI": "ldap://127.0.0.1:389/",
            "LDAP_USER_SEARCH_BASE": "ou=people,dc=lab,dc=example",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "['accounts.backends.LoginThrottleBackend', 'accounts.directory.DirectoryBackend', "
        "'django.contrib.auth.backends.ModelBackend']" in result.stdout
    )
