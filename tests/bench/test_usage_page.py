"""Benchmark: the usage page over a year of a 50-user lab (`make bench`, PostgreSQL).

About 100,000 reservations in 2025 (a third of them jobs, with their Job rows), 4 hosts x
4 GPUs, back to back on each GPU so the exclusion constraint holds, every fifth one
CPU-only; the last 30 days carry a GPU sample a minute per GPU (the telemetry keeps 30).
The page is then asked for the whole year and for twelve weeks, as staff, through the real
view; the figures are server time per request and the statements it sends. Target: p95 <=
500 ms for the year. Rows: AIVC_BENCH_USAGE_ROWS (default 100,000)."""

import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import User
from bookings.models import GpuAllocation, Reservation
from containers.models import Gpu, Host, Image
from jobs.models import Job
from tests.bench.conftest import machine, summary

# Committed, not rolled back: VACUUM then marks the samples' pages all-visible, as
# autovacuum does on a lab's database, which the index-only reads of the samples rely on.
pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]

ROWS = int(os.environ.get("AIVC_BENCH_USAGE_ROWS", "100000"))
USERS, HOSTS, GPUS_PER_HOST = 50, 4, 4
BASE = datetime(2025, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
REQUESTS = 20


def seed() -> None:
    image = Image.objects.create(reference="bench/usage:latest", is_default=True)
    hosts = Host.objects.bulk_create(Host(name=f"usage-{h}", cpus=64, ram_gb=512) for h in range(HOSTS))
    gpus = Gpu.objects.bulk_create(
        Gpu(host=host, index=i, uuid=f"GPU-usage-{host.pk}-{i}")
        for host in hosts
        for i in range(GPUS_PER_HOST)
    )
    users = User.objects.bulk_create(
        User(username=f"usage{u:02d}", forward_port=10001 + u, password="!") for u in range(USERS)
    )
    per_gpu = ROWS // len(gpus) + 1
    step = YEAR / per_gpu  # each GPU's reservations follow one another through the year
    reservations, holds = [], []
    for i in range(ROWS):
        gpu = gpus[i % len(gpus)]
        start = BASE + step * (i // len(gpus))
        end = start + step * 0.9
        ran = i % 10 != 0
        kind = Reservation.Kind.JOB if i % 3 == 0 else Reservation.Kind.BOOKING
        reservations.append(
            Reservation(
                user=users[(i * 7) % USERS],
                host=gpu.host,
                kind=kind,
                start=start,
                end=end,
                booked_end=end if i % 4 else end + step * 0.05,
                released_at=None if i % 4 else end,
                cpus=Decimal(4),
                memory_gb=16,
                gpu_count=0 if i % 5 == 0 else 1,
                image=image,
                forward_port=10001,
                status="ended" if ran else "cancelled",
                cancelled_at=None if ran else start - timedelta(hours=1),
                started_at=start if ran else None,
                ended_at=end if ran else None,
                ended_by="job" if kind == Reservation.Kind.JOB else ("owner" if i % 4 == 0 else ""),
            )
        )
        holds.append(gpu if i % 5 and ran else None)
    created = Reservation.objects.bulk_create(reservations, batch_size=5000)
    GpuAllocation.objects.bulk_create(
        (
            GpuAllocation(reservation=r, gpu=gpu, start=r.start, end=r.end)
            for r, gpu in zip(created, holds, strict=True)
            if gpu is not None
        ),
        batch_size=5000,
    )
    Job.objects.bulk_create(
        (
            Job(
                user=r.user,
                host=r.host,
                image=image,
                command="python train.py",
                cpus=r.cpus,
                memory_gb=r.memory_gb,
                gpu_count=r.gpu_count,
                time_limit_minutes=120,
                status="succeeded",
                submitted_at=r.start - timedelta(minutes=(r.pk * 13) % 600),
                started_at=r.start,
                finished_at=r.end,
                reservation=r,
            )
            for r in created
            if r.kind == Reservation.Kind.JOB and r.started_at
        ),
        batch_size=5000,
    )
    samples_from = BASE + YEAR - timedelta(days=30)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY containers_gpusample (gpu_id, taken_at, utilisation_percent, memory_used_mb, "
            "process_count) FROM STDIN"
        ) as copy,
    ):
        for minute in range(30 * 24 * 60):
            moment = samples_from + timedelta(minutes=minute)
            for gpu in gpus:
                copy.write_row((gpu.pk, moment, (minute * 7 + gpu.pk) % 100, 1000, 1))
    with connection.cursor() as cursor:
        for table in ("bookings_reservation", "bookings_gpuallocation", "jobs_job", "containers_gpusample"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def timed_page(client, query: dict) -> tuple[dict, int]:
    samples, statements = [], 0
    for _ in range(REQUESTS):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(reverse("usage"), query)
            samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
        statements = len(queries)
    return summary(samples), statements


def test_the_usage_page_over_a_year_of_a_fifty_user_lab(client, django_user_model, write_figures):
    if connection.vendor != "postgresql":
        pytest.skip("the benchmark measures PostgreSQL")
    started = time.perf_counter()
    seed()
    seed_seconds = time.perf_counter() - started
    staff = django_user_model.objects.create(
        username="usage-staff", is_staff=True, forward_port=10001 + USERS
    )
    client.force_login(staff)
    year, year_queries = timed_page(client, {"from": "2025-01-01", "to": "2025-12-31"})
    weeks, weeks_queries = timed_page(client, {"from": "2025-10-13", "to": "2025-12-31"})
    one_host, host_queries = timed_page(
        client, {"from": "2025-01-01", "to": "2025-12-31", "host": Host.objects.get(name="usage-0").pk}
    )
    load = os.getloadavg()
    text = (
        f"# Usage page (issue 22)\n\n`tests/bench/test_usage_page.py`, {ROWS:,} reservations "
        f"({Job.objects.count():,} of them jobs), {USERS} users, {HOSTS} x {GPUS_PER_HOST} GPUs, "
        f"2025; {30 * 24 * 60 * HOSTS * GPUS_PER_HOST:,} GPU samples; seeded in {seed_seconds:.0f} s. "
        f"{machine()}, load average {load[0]:.1f} / {load[1]:.1f}. Server time of {REQUESTS} requests "
        f"each, as staff (every chart):\n\n"
        "| range | p50 | p95 | mean | statements |\n| --- | --- | --- | --- | --- |\n"
        f"| the year | {year['p50']:.0f} ms | {year['p95']:.0f} ms | {year['mean']:.0f} ms | "
        f"{year_queries} |\n"
        f"| the year, one host | {one_host['p50']:.0f} ms | {one_host['p95']:.0f} ms | "
        f"{one_host['mean']:.0f} ms | {host_queries} |\n"
        f"| twelve weeks | {weeks['p50']:.0f} ms | {weeks['p95']:.0f} ms | {weeks['mean']:.0f} ms | "
        f"{weeks_queries} |\n"
    )
    write_figures("usage-page.md", text)
    assert year_queries <= 20
