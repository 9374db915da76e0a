"""/healthz: what a load balancer or monitor reads, with no login."""

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.models import Task

from containers.models import HostAgent
from containers.schedules import RECONCILE_SCHEDULE
from tests.deploy.gunicorn_server import url_of_the_test_database
from tests.factories import HostFactory

REPO = Path(__file__).resolve().parents[2]


def _agent_host(name: str, *, seen_ago: timedelta | None):
    host = HostFactory(name=name, served_by_agent=True)
    last_seen = timezone.now() - seen_ago if seen_ago is not None else None
    HostAgent.objects.create(host=host, last_seen_at=last_seen)
    return host


def _central_reconcile_finished(*, ago: timedelta) -> None:
    stopped = timezone.now() - ago
    Task.objects.create(
        id=f"task-{ago.total_seconds()}",
        name="tick",
        func="containers.tasks.reconcile",
        group=RECONCILE_SCHEDULE,
        started=stopped - timedelta(seconds=2),
        stopped=stopped,
        success=True,
    )


@pytest.mark.django_db
def test_it_answers_200_when_the_database_the_broker_and_an_agent_answer(client):
    _agent_host("gpu1", seen_ago=timedelta(seconds=5))
    _agent_host("gpu2", seen_ago=timedelta(hours=1))

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {
        "database": "ok",
        "broker": "ok",
        "agents": {"gpu1": "online", "gpu2": "offline"},
    }
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_it_answers_503_when_no_agent_is_alive(client):
    _agent_host("gpu1", seen_ago=timedelta(minutes=5))  # stale: three beats missed
    _agent_host("gpu2", seen_ago=None)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["agents"] == {"gpu1": "stale", "gpu2": "offline"}
    assert response.json()["database"] == "ok"


@pytest.mark.django_db
def test_it_answers_503_with_no_host_at_all(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["agents"] == {}


@pytest.mark.django_db
def test_a_host_without_an_agent_is_as_alive_as_the_central_schedulers_last_reconcile(client):
    HostFactory(name="solo", served_by_agent=False)

    assert client.get("/healthz").json()["agents"] == {"solo": "offline"}  # never ran

    _central_reconcile_finished(ago=timedelta(minutes=4))
    assert client.get("/healthz").json()["agents"] == {"solo": "stale"}

    _central_reconcile_finished(ago=timedelta(seconds=20))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["agents"] == {"solo": "online"}


@pytest.mark.django_db
def test_a_hosts_own_reconcile_does_not_count_for_the_central_scheduler(client):
    HostFactory(name="solo", served_by_agent=False)
    Task.objects.create(
        id="agent-task",
        name="tick",
        func="containers.tasks.reconcile",
        group=f"{RECONCILE_SCHEDULE} @ gpu9",
        started=timezone.now(),
        stopped=timezone.now(),
        success=True,
    )
    assert client.get("/healthz").status_code == 503


@pytest.mark.django_db
def test_a_probe_over_plain_http_is_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    _agent_host("gpu1", seen_ago=timedelta(seconds=1))

    assert client.get("/accounts/login/").status_code == 301
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_a_head_probe_is_answered_and_a_post_refused(client):
    _agent_host("gpu1", seen_ago=timedelta(seconds=1))
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


def _healthz_in_a_portal_process(**environment: str) -> tuple[int, dict, str]:
    """/healthz asked of a real portal process started with `environment`: nothing mocked."""
    script = (
        "import django, json; django.setup();"
        "from django.test.utils import setup_test_environment; setup_test_environment();"
        "from django.test import Client; response = Client().get('/healthz');"
        "print(json.dumps([response.status_code, response.json()]))"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "aivc_portal.settings",
        "DEBUG": "0",
        **environment,
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    status, body = json.loads(result.stdout.strip().splitlines()[-1])
    return status, body, result.stderr


@pytest.mark.django_db(transaction=True)
def test_it_answers_503_when_the_task_broker_is_unreachable():
    _agent_host("gpu1", seen_ago=timedelta(seconds=1))
    status, body, log = _healthz_in_a_portal_process(
        DATABASE_URL=url_of_the_test_database(), Q_REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0"
    )
    assert status == 503
    assert body == {"database": "ok", "broker": "error", "agents": {"gpu1": "online"}}
    assert "the task broker does not answer (ConnectionError)" in log


def test_it_answers_503_when_the_database_is_unreachable():
    status, body, log = _healthz_in_a_portal_process(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{_closed_port()}/aivc"
    )
    assert status == 503
    assert body == {"database": "error", "broker": "unknown", "agents": {}}
    # The reason goes to the log, not to the anonymous caller.
    assert "Health check: the database does not answer" in log
