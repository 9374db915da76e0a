"""gunicorn's logs as production writes them (deploy/gunicorn.conf.py): behind nginx, the
access line shows the client nginx saw and the user, and every line has a UTC time."""

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from accounts.token_services import api_token_create
from tests.deploy.gunicorn_server import REPO, portal_under_gunicorn
from tests.factories import UserFactory

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


@pytest.mark.django_db(transaction=True)
def test_behind_the_proxy_the_access_line_has_the_real_client_and_the_user_in_json(tmp_path):
    _, token = api_token_create(user=UserFactory(username="scripted"), name="laptop")
    log = tmp_path / "gunicorn.log"
    environment = {"GUNICORN_WORKERS": "1", "BEHIND_TLS_PROXY": "1", "LOG_FORMAT": "json"}
    with portal_under_gunicorn(log, **environment) as base:
        # As nginx passes it on: whatever the client wrote, then the address nginx saw.
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Forwarded-For": "127.0.0.1, 203.0.113.9",
            "X-Forwarded-Proto": "https",
        }
        response = requests.get(f"{base}/api/v1/profile/", headers=headers, timeout=10)
        assert response.status_code == 200

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines, log.read_text()
    assert all(re.fullmatch(ISO_UTC, line["time"]) for line in lines)
    access = next(line for line in lines if line["logger"] == "gunicorn.access")
    assert access["client"] == "203.0.113.9"
    assert access["user"] == "scripted"
    assert access["request_id"] == response.headers["X-Request-ID"]
    assert (access["method"], access["path"], access["status"]) == ("GET", "/api/v1/profile/", "200")
    assert token not in log.read_text()
    # gunicorn's own lines (start, stop) are in the same format.
    assert any(line["logger"] == "gunicorn.error" for line in lines)


def _config(**environment: str) -> subprocess.CompletedProcess:
    script = (
        "import json, runpy; c = runpy.run_path('deploy/gunicorn.conf.py');"
        "print(json.dumps([c['logconfig_dict']['formatters']['portal'], c['access_log_format']]))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
    )


def test_by_default_gunicorn_writes_plain_lines_with_the_portals_client_and_user():
    formatter, access_format = json.loads(_config(LOG_FORMAT="").stdout)
    assert formatter == {"()": "aivc_portal.logs.PlainFormatter"}
    assert access_format.startswith("%({aivc.client}e)s %({aivc.user}e)s ")


def test_a_wrong_log_format_stops_gunicorn_naming_the_variable():
    result = _config(LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT='xml' is not one of plain, json" in result.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_the_calendar_feeds_secret_never_reaches_a_log_line(tmp_path, log_format):
    # As an attacker who can read the log files (a backup, a log shipper) would look for it:
    # the feed URL of a real user, fetched once, and a guessed one that Django logs as 404.
    from accounts.channel_services import calendar_feed_token

    secret = calendar_feed_token(user=UserFactory(username="subscriber"))
    guessed = "9999.0123456789abcdef0123456789abcdef01234567"
    log = tmp_path / "gunicorn.log"
    with portal_under_gunicorn(log, GUNICORN_WORKERS="1", LOG_FORMAT=log_format) as base:
        assert requests.get(f"{base}/calendar/{secret}.ics", timeout=10).status_code == 200
        assert requests.get(f"{base}/calendar/{guessed}.ics", timeout=10).status_code == 404

    text = log.read_text()
    assert "/calendar/[redacted].ics" in text, text
    assert secret not in text and guessed not in text and secret.split(".")[1] not in text
