"""Log lines: UTC ISO 8601 times, JSON on request, the request's id and user, no secrets."""

import io
import json
import logging
import re

import pytest

from aivc_portal.logs import JsonFormatter, PlainFormatter, RequestContext
from tests.factories import UserFactory

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


def _record(
    name: str = "bookings", message: str = "booked %s", args: object = ("gpu1",)
) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)


def test_a_plain_line_starts_with_its_utc_time():
    line = PlainFormatter().format(_record())
    assert re.fullmatch(rf"{ISO_UTC} INFO bookings: booked gpu1", line)


def test_a_json_line_is_one_object_with_time_level_logger_and_message():
    entry = json.loads(JsonFormatter().format(_record()))
    assert re.fullmatch(ISO_UTC, entry.pop("time"))
    assert entry == {"level": "INFO", "logger": "bookings", "message": "booked gpu1"}


def test_a_json_line_keeps_its_traceback_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_a_json_access_line_keeps_the_request_fields_and_no_header():
    atoms = {
        "{aivc.client}e": "203.0.113.9",
        "{aivc.user}e": "alice",
        "{aivc.request_id}e": "abc123",
        "m": "GET",
        "U": "/api/v1/profile/",
        "s": "200",
        "B": 512,
        "L": "0.012000",
        "{authorization}i": "Bearer aivc_secret",
        "{cookie}i": "sessionid=secret",
    }
    record = _record("gunicorn.access", '%({aivc.client}e)s "%(m)s %(U)s" %(s)s', atoms)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["client"] == "203.0.113.9"
    assert (entry["user"], entry["request_id"], entry["status"], entry["path"]) == (
        "alice",
        "abc123",
        "200",
        "/api/v1/profile/",
    )
    assert "secret" not in json.dumps(entry)


@pytest.fixture
def portal_log():
    """What the root logger writes during a test, through the portal's filter and JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestContext())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


@pytest.mark.django_db
def test_lines_logged_while_serving_a_request_carry_its_id_and_user(client, portal_log):
    client.force_login(UserFactory(username="alice"))

    response = client.get("/no-such-page/")

    lines = [json.loads(line) for line in portal_log.getvalue().splitlines()]
    not_found = next(line for line in lines if line["logger"] == "django.request")
    assert not_found["request_id"] == response["X-Request-ID"]
    assert not_found["user"] == "alice"


@pytest.mark.django_db
def test_an_anonymous_request_logs_no_user_and_reads_nothing_for_it(
    client, portal_log, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.get("/no-such-page/")
    not_found = json.loads(portal_log.getvalue().splitlines()[-1])
    assert not_found["request_id"] == response["X-Request-ID"]
    assert "user" not in not_found


def test_lines_outside_a_request_have_no_request_fields(portal_log):
    logging.getLogger("containers").warning("tick")
    assert "request_id" not in json.loads(portal_log.getvalue())


@pytest.mark.django_db
def test_the_access_log_fields_are_the_portals_client_address_and_user(client, settings):
    settings.BEHIND_TLS_PROXY = True
    client.force_login(UserFactory(username="alice"))

    response = client.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.1, 203.0.113.9")

    environ = response.wsgi_request.META
    assert (environ["aivc.client"], environ["aivc.user"]) == ("203.0.113.9", "alice")
    assert environ["aivc.request_id"] == response["X-Request-ID"]


@pytest.mark.django_db
def test_a_token_users_name_reaches_the_access_log(client):
    from accounts.token_services import api_token_create

    _, token = api_token_create(user=UserFactory(username="scripted"), name="laptop")

    response = client.get("/api/v1/profile/", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    assert response.wsgi_request.META["aivc.user"] == "scripted"
