"""/healthz and /metrics with a large lab: 50 hosts x 8 GPUs, a day of minute samples
(576,000 rows), 2,000 bookings and 1,000 jobs. Each request goes through the whole
middleware stack (Django's test client, in process). Writes docs/benchmarks/monitoring.md."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.test import Client
from django.utils import timezone

from bookings.models import Reservation
from containers.models import Gpu, Host, HostAgent
from containers.telemetry.models import GpuSample
from jobs.models import Job
from tests.bench.conftest import machine, summary
from tests.factories import ImageFactory, UserFactory

pytestmark = [pytest.mark.bench, pytest.mark.django_db]
HOSTS, GPUS, HOURS = 50, 8, 24
BOOKINGS, JOBS, REQUESTS = 2000, 1000, 200


def _lab(now):
    hosts = Host.objects.bulk_create(
        Host(name=f"gpu{n:02d}", address=f"gpu{n:02d}.lab", cpus=64, ram_gb=512, served_by_agent=True)
        for n in range(HOSTS)
    )
    HostAgent.objects.bulk_create(HostAgent(host=host, last_seen_at=now) for host in hosts)
    gpus = Gpu.objects.bulk_create(
        Gpu(host=host, index=index, uuid=f"GPU-{host.pk}-{index}", name="RTX", memory_mb=24576)
        for host in hosts
        for index in range(GPUS)
    )
    batch = []
    for minute in range(HOURS * 60):
        taken_at = now - timedelta(minutes=minute)
        batch.extend(
            GpuSample(gpu=gpu, taken_at=taken_at, utilisation_percent=minute % 100, memory_used_mb=minute)
            for gpu in gpus
        )
        if len(batch) >= 20000:
            GpuSample.objects.bulk_create(batch)
            batch = []
    GpuSample.objects.bulk_create(batch)
    users = [UserFactory(username=f"bench{n:03d}") for n in range(100)]
    image = ImageFactory(reference="lab/bench:1")
    statuses = [Reservation.Status.RUNNING, Reservation.Status.ENDED, Reservation.Status.SCHEDULED]
    Reservation.objects.bulk_create(
        Reservation(
            user=users[n % 100],
            host=hosts[n % HOSTS],
            # A user's bookings may not overlap: each of the 100 users holds one an hour.
            start=now - timedelta(hours=n // 100 + 1),
            end=now - timedelta(hours=n // 100),
            cpus=Decimal(1),
            memory_gb=1,
            image=image,
            forward_port=users[n % 100].forward_port,
            status=statuses[n % 3],
            started_at=now - timedelta(hours=n // 100 + 1) + timedelta(seconds=n % 300),
        )
        for n in range(BOOKINGS)
    )
    Job.objects.bulk_create(
        Job(
            user=users[n % 100],
            image=image,
            command="python train.py",
            cpus=Decimal(1),
            memory_gb=1,
            time_limit_minutes=60,
            status=Job.Status.RUNNING if n % 2 else Job.Status.QUEUED,
            submitted_at=now - timedelta(hours=n % 23),
            started_at=now - timedelta(hours=n % 23) + timedelta(minutes=n % 90) if n % 2 else None,
        )
        for n in range(JOBS)
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def _counting(statements: list):
    def wrapper(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    return wrapper


def _timed(client: Client, path: str) -> tuple[list[float], int]:
    timings = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = client.get(path, REMOTE_ADDR="127.0.0.1")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:300]
    return timings, len(response.content)


def test_health_and_metrics_with_fifty_hosts_of_eight_gpus(write_figures):
    now = timezone.now()
    _lab(now)
    # Filling the lab takes minutes: its agents and samples are made current again.
    shift = timezone.now() - now
    HostAgent.objects.update(last_seen_at=timezone.now())
    GpuSample.objects.filter(taken_at__gte=now - timedelta(minutes=10)).update(taken_at=F("taken_at") + shift)
    client = Client()
    queries_health, queries_metrics = [], []
    with connection.execute_wrapper(_counting(queries_health)):
        client.get("/healthz")
    with connection.execute_wrapper(_counting(queries_metrics)):
        body = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert body.count("aivc_gpu_utilization_ratio{") == HOSTS * GPUS
    health, _ = _timed(client, "/healthz")
    metrics, size = _timed(client, "/metrics")
    h, m = summary(health), summary(metrics)
    write_figures(
        "monitoring.md",
        f"""# Monitoring endpoints

`tests/bench/test_monitoring_bench.py`: {HOSTS} hosts x {GPUS} GPUs, {HOURS} h of minute samples
({HOSTS * GPUS * HOURS * 60:,} rows), {BOOKINGS:,} bookings, {JOBS:,} jobs; {REQUESTS} requests each,
one after another, through the whole middleware stack (Django's test client, in process).
Database: {connection.vendor}. Machine: {machine()}.

| endpoint | p50 | p95 | mean | queries | body |
|---|---|---|---|---|---|
| /healthz | {h["p50"]:.1f} ms | {h["p95"]:.1f} ms | {h["mean"]:.1f} ms | {len(queries_health)} | |
| /metrics | {m["p50"]:.1f} ms | {m["p95"]:.1f} ms | {m["mean"]:.1f} ms | {len(queries_metrics)} | \
{size:,} bytes |
""",
    )
