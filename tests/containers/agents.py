"""Helpers for the tests that run agents as real `manage.py qcluster` processes against a
shared PostgreSQL database: the agents' environment, starting and stopping them, hosts
with folder roots of their own, and waiting for what the agents do."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from bookings.models import Reservation
from bookings.services import reservation_create
from containers.models import Host, HostAgent
from tests.containers.test_runtime_docker import _url_of_the_test_database
from tests.factories import UserFactory

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60


def wait_for(
    condition: Callable[[], bool], *, what: str | Callable[[], str], timeout_s: float = WAIT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def agent_environment(settings, **extra: str) -> dict[str, str]:
    """What every agent process of a test gets: the test database, the real Docker runtime
    in the test's label scope, a one-second heartbeat and a quick poll. Agents share a
    PostgreSQL database, so a test on SQLite skips."""
    if connection.vendor != "postgresql":
        pytest.skip("agents share a PostgreSQL database (DATABASE_URL=postgres://...)")
    settings.AGENT_HEARTBEAT_SECONDS = 1
    return {
        **os.environ,
        "DATABASE_URL": _url_of_the_test_database(),
        "CONTAINER_RUNTIME": "containers.runtime.DockerRuntime",
        "CONTAINER_SCOPE": settings.CONTAINER_SCOPE,
        "CONTAINER_NETWORK": settings.CONTAINER_NETWORK,
        "CONTAINER_PREFIX": settings.CONTAINER_PREFIX,
        "SECRET_KEY": settings.SECRET_KEY,
        "AGENT_HEARTBEAT_SECONDS": "1",
        "Q_WORKERS": "2",
        "Q_POLL": "0.2",
        "DEBUG": "0",
        **extra,
    }


@contextmanager
def agent_processes(environment: dict[str, str], log_dir: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Yields `start(host_name, **env)`, which starts an agent of that host; every process
    it started is stopped on the way out (and only those). SIGTERM goes to the agent's main
    process only, as systemd's KillMode=mixed does: the cluster then stops its own workers."""
    started: list[subprocess.Popen] = []

    def start(host_name: str, **env: str) -> subprocess.Popen:
        log = open(log_dir / f"agent-{host_name}-{len(started)}.log", "w+")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=REPO,
            env={**environment, **env, "AIVC_HOST": host_name},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log = log
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            process.log.close()


def output(process: subprocess.Popen) -> str:
    process.log.flush()
    process.log.seek(0)
    return process.log.read()


def claimed(host: Host) -> bool:
    return HostAgent.objects.filter(host=host).exclude(holder="").exists()


def free_port() -> int:
    """A port nothing listens on now: the forward ports of other test runs on this machine
    are taken from PORT_RANGE, and a taken port makes a launch wait for the next tick."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def book_now(*, host: Host, username: str, image, gpu_count: int = 0) -> Reservation:
    """Books as the web does: with the host row as it is now, which says (once its agent
    claimed it) that the host's work goes to that agent."""
    user = UserFactory(username=username, forward_port=free_port())
    host = Host.objects.get(pk=host.pk)
    return reservation_create(
        user=user, host=host, start="now", end="1-day", cpus=1, memory_gb=1, gpu_count=gpu_count, image=image
    )
