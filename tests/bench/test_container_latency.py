"""Start and stop latency of reservation containers with the real scheduler (a `qcluster`
process) and the real Docker engine: from a reservation's start to its container running,
and from its end to its container removed, as the engine's own event times tell.
Run with `make bench`; writes docs/benchmarks/containers.md."""

import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from django_q.tasks import async_task

from containers.specs import LABEL_MANAGED
from tests.factories import ReservationFactory, UserFactory

pytestmark = [pytest.mark.bench, pytest.mark.docker]
REPO = Path(__file__).resolve().parents[2]
RESERVATIONS = 20
LEAD_S = 12  # time for the cluster to come up before the first start
SPACING_S = 1.5
LENGTH_S = 6
TARGET_P95_S = 5.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _database_url() -> str:
    database = connection.settings_dict
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_containers_start_and_stop_within_seconds(
    engine_host, docker_scope, docker_client, test_image, default_profile, tmp_path
):
    events: dict[tuple[str, str], datetime] = {}
    stream = docker_client.events(
        decode=True, filters={"type": "container", "label": f"{LABEL_MANAGED}={docker_scope}"}
    )

    def record() -> None:
        for event in stream:
            name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
            stamp = datetime.fromtimestamp(event["timeNano"] / 1e9, tz=UTC)
            events.setdefault((event.get("Action", ""), name), stamp)

    threading.Thread(target=record, daemon=True).start()

    first_start = timezone.now() + timedelta(seconds=LEAD_S)
    reservations = []
    for number in range(RESERVATIONS):
        start = first_start + timedelta(seconds=SPACING_S * number)
        reservations.append(
            ReservationFactory(
                user=UserFactory(username=f"bench{number:02d}"),
                host=engine_host,
                image=test_image,
                cpus=Decimal("0.5"),
                memory_gb=1,
                start=start,
                end=start + timedelta(seconds=LENGTH_S),
            )
        )

    log = open(tmp_path / "qcluster.log", "w")  # noqa: SIM115 - closed below
    environment = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CONTAINER_RUNTIME": "containers.runtime.DockerRuntime",
        "CONTAINER_SCOPE": django_settings.CONTAINER_SCOPE,
        "CONTAINER_NETWORK": django_settings.CONTAINER_NETWORK,  # the scope's own, removed after
        "CONTAINER_PREFIX": django_settings.CONTAINER_PREFIX,
        "SECRET_KEY": django_settings.SECRET_KEY,
        "DEBUG": "0",
    }
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=REPO, env=environment, stdout=log, stderr=log
    )
    try:
        # What a booking does: queue a reconcile; its tick starts the waker.
        async_task("containers.tasks.reconcile")
        last_end = reservations[-1].end
        deadline = time.monotonic() + (last_end - timezone.now()).total_seconds() + 30
        names = {r.pk: f"{django_settings.CONTAINER_PREFIX}{r.user.username}" for r in reservations}
        while time.monotonic() < deadline:
            if all(("destroy", name) in events for name in names.values()):
                break
            time.sleep(0.2)
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.kill()
        log.close()

    start_latency, stop_latency = [], []
    for reservation in reservations:
        name = names[reservation.pk]
        assert ("start", name) in events, f"{name} never started; see {tmp_path / 'qcluster.log'}"
        assert ("destroy", name) in events, f"{name} never removed; see {tmp_path / 'qcluster.log'}"
        start_latency.append((events[("start", name)] - reservation.start).total_seconds())
        stop_latency.append((events[("destroy", name)] - reservation.end).total_seconds())

    rows = {"start": start_latency, "stop": stop_latency}
    _write_report(rows)
    for label, values in rows.items():
        print(f"{label}: p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s")
    assert percentile(start_latency, 0.95) <= TARGET_P95_S
    assert percentile(stop_latency, 0.95) <= TARGET_P95_S


def _write_report(rows: dict[str, list[float]]) -> None:
    lines = [
        "# Container start and stop latency",
        "",
        f"Measured {timezone.now():%Y-%m-%d %H:%M} UTC by `tests/bench/test_container_latency.py` "
        "(`make bench`): a real `manage.py qcluster` (django-q2, ORM broker, PostgreSQL) and the "
        f"real Docker engine, {RESERVATIONS} reservations starting {SPACING_S:g} s apart and "
        f"lasting {LENGTH_S} s each, busybox test image. Latency = the engine's own `start` / "
        "`destroy` event time minus the reservation's start / end.",
        "",
        "| | p50 | p95 | max | mean |",
        "|---|---|---|---|---|",
    ]
    for label, values in rows.items():
        lines.append(
            f"| {label} latency (s) | {percentile(values, 0.5):.2f} | {percentile(values, 0.95):.2f} "
            f"| {max(values):.2f} | {statistics.mean(values):.2f} |"
        )
    lines += [
        "| old system: cron every 30 minutes | up to 1800 | up to 1800 | 1800 | ~900 |",
        "",
        f"Target: p95 at most {TARGET_P95_S:g} s. The old system started and stopped containers "
        "from a cron job every 30 minutes, so a booking could begin (or overrun) by up to half "
        "an hour. The portal's minute tick starts a waker whenever a start or end is near; "
        "the waker sleeps until that instant and reconciles then.",
        "",
    ]
    target = REPO / "docs" / "benchmarks" / "containers.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines))
