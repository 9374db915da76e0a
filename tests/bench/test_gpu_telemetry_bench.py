"""How the telemetry reads scale with a full retention window of samples: 8 GPUs sampled
every minute for 30 days (345,600 rows). Writes docs/benchmarks/gpu-telemetry.md."""

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection

from bookings.models import Reservation
from containers.telemetry.models import GpuSample
from containers.telemetry.selectors import (
    gpu_hours_busy_by_user,
    gpu_table,
    reservation_gpu_usage,
    reservation_idle_state,
)
from containers.telemetry.services import gpu_samples_prune, gpu_samples_record
from tests.containers.telemetry.helpers import reading, result_of
from tests.factories import HostFactory, ReservationFactory, UserFactory, local

pytestmark = [pytest.mark.bench, pytest.mark.django_db]
GPUS, DAYS = 8, 30
REPORT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "gpu-telemetry.md"


def timed(function, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def test_telemetry_reads_over_a_full_retention_window():
    host = HostFactory(name="bench-01", cpus=64, ram_gb=512, gpus=GPUS)
    gpus = list(host.gpus.all())
    start = local(2026, 3, 1)
    end = start + timedelta(days=DAYS)
    # Each GPU is booked in back-to-back 1-day reservations by 10 users.
    users = [UserFactory(username=f"bench{n:02d}") for n in range(10)]
    reservations = []
    for day in range(DAYS):
        for gpu in gpus:
            reservations.append(
                ReservationFactory(
                    user=users[(day + gpu.index) % 10],
                    host=host,
                    start=start + timedelta(days=day),
                    end=start + timedelta(days=day + 1),
                    status=Reservation.Status.ENDED,
                    gpus=[gpu],
                )
            )
    minutes = DAYS * 24 * 60
    started = time.perf_counter()
    batch = []
    for minute in range(minutes):
        taken_at = start + timedelta(minutes=minute)
        for gpu in gpus:
            batch.append(
                GpuSample(
                    gpu=gpu,
                    taken_at=taken_at,
                    utilisation_percent=(minute * 7 + gpu.index * 13) % 100,
                    memory_used_mb=(minute * 11) % 24000,
                    process_count=1,
                )
            )
        if len(batch) >= 20000:
            GpuSample.objects.bulk_create(batch)
            batch = []
    GpuSample.objects.bulk_create(batch)
    insert_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE containers_gpusample")
    now = end - timedelta(minutes=1)
    one_tick = result_of(*(reading(gpu.index, utilisation=50, pids=(1,)) for gpu in gpus))

    figures = {
        "gpu_hours_busy_by_user over 30 days": timed(lambda: gpu_hours_busy_by_user(start, end), repeat=3),
        "gpu_hours_busy_by_user over 1 day": timed(
            lambda: gpu_hours_busy_by_user(end - timedelta(days=1), end)
        ),
        "reservation_gpu_usage (1-day reservation)": timed(
            lambda: reservation_gpu_usage(reservation=reservations[-1])
        ),
        "reservation_idle_state (60-minute window)": timed(
            lambda: reservation_idle_state(reservation=reservations[-1], now=now)
        ),
        "gpu_table (8 GPUs)": timed(lambda: gpu_table(now=now)),
        "gpu_samples_record (one tick, 8 GPUs)": timed(
            lambda: gpu_samples_record(host=host, result=one_tick)
        ),
    }
    pruned_at = time.perf_counter()
    pruned = gpu_samples_prune(now=start + timedelta(days=DAYS + 1))  # a day's worth goes
    figures["gpu_samples_prune (one day, 11,520 rows)"] = time.perf_counter() - pruned_at
    assert pruned == GPUS * 24 * 60

    rows = "\n".join(f"| {name} | {seconds * 1000:.1f} |" for name, seconds in figures.items())
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        "# GPU telemetry\n\n"
        f"{GPUS} GPUs sampled every minute for {DAYS} days: {GPUS * minutes:,} samples, "
        f"{len(reservations)} reservations, PostgreSQL ({connection.pg_version // 10000}). "
        f"Inserting them took {insert_seconds:.1f} s. Best of several runs, `make bench`.\n\n"
        "| operation | ms |\n|---|---|\n" + rows + "\n"
    )
    print(REPORT.read_text())
