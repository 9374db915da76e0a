"""Benchmark: the staff CSV exports over 1,000,000 reservations (`make bench`).

Rows go in with PostgreSQL COPY (1 GPU allocation each, spread over 32 hosts x 8 GPUs so
the exclusion constraint holds), then each export is read through the real view, chunk by
chunk, while a thread samples the process's resident memory. Targets: >= 100,000 rows/s
and <= 150 MB peak RSS. Rows: AIVC_BENCH_ROWS (default 1,000,000).
"""

import os
import resource
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.urls import reverse

from accounts.models import User
from containers.models import Gpu, Host, Image

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

ROWS = int(os.environ.get("AIVC_BENCH_ROWS", "1000000"))
HOSTS, GPUS_PER_HOST, USERS = 32, 8, 1000
FIRST_ID = 50_000_000
BASE = datetime(2025, 1, 1, tzinfo=UTC)
NULL = "\\N"
STATUSES = ["ended"] * 90 + ["cancelled"] * 5 + ["failed"] * 3 + ["blocked"] * 2


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def copy_lines(cursor, sql: str, lines) -> None:
    with cursor.copy(sql) as copy:
        batch = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 20000:
                copy.write("".join(batch))
                batch = []
        copy.write("".join(batch))


def seed(rows: int) -> None:
    image = Image.objects.create(reference="bench/aivc-server:latest", is_default=True)
    hosts = Host.objects.bulk_create(Host(name=f"bench-{h:02d}", cpus=64, ram_gb=256) for h in range(HOSTS))
    gpus = Gpu.objects.bulk_create(
        Gpu(host=host, index=index, uuid=f"GPU-{host.pk}-{index}")
        for host in hosts
        for index in range(GPUS_PER_HOST)
    )
    users = User.objects.bulk_create(
        User(username=f"bench{u:04d}", forward_port=10001 + u, password="!") for u in range(USERS)
    )
    per_slot = HOSTS * GPUS_PER_HOST

    def window(i: int) -> tuple[str, str]:
        start = BASE + timedelta(hours=i // per_slot)
        return start.isoformat(), (start + timedelta(hours=1)).isoformat()

    def reservation_lines():
        for i in range(rows):
            start, end = window(i)
            status = STATUSES[i % len(STATUSES)]
            user = users[i % USERS]
            ran = status == "ended"
            yield (
                f"{FIRST_ID + i}\t{user.pk}\t{hosts[i % HOSTS].pk}\t{start}\t{end}\t{end}\t"
                f"4\t16\t1\t{image.pk}\t"
                f"python train.py --epoch {i % 50}\t{user.forward_port}\t{status}\t\t\t"
                f"{start if ran else NULL}\t{end if ran else NULL}\t"
                f"{start if status == 'cancelled' else NULL}\t{NULL}\t0\tf\t{start}\t{start}\n"
            )

    def allocation_lines():
        for i in range(rows):
            start, end = window(i)
            gpu = gpus[(i % HOSTS) * GPUS_PER_HOST + (i // HOSTS) % GPUS_PER_HOST]
            active = "f" if STATUSES[i % len(STATUSES)] == "cancelled" else "t"
            yield f"{FIRST_ID + i}\t{gpu.pk}\t{start}\t{end}\t{active}\n"

    with connection.cursor() as cursor:
        raw = cursor.cursor
        copy_lines(
            raw,
            'COPY bookings_reservation (id, user_id, host_id, start, "end", booked_end, cpus, memory_gb, '
            "gpu_count, image_id, extra_command, forward_port, status, status_message, container_id, "
            "started_at, ended_at, cancelled_at, released_at, restart_count, restart_requested, created_at, "
            "updated_at) FROM STDIN",
            reservation_lines(),
        )
        copy_lines(
            raw,
            'COPY bookings_gpuallocation (reservation_id, gpu_id, start, "end", active) FROM STDIN',
            allocation_lines(),
        )
        cursor.execute("ANALYZE bookings_reservation")
        cursor.execute("ANALYZE bookings_gpuallocation")


def export(client, name: str) -> tuple[int, int, float, float]:
    """(lines, bytes, seconds, peak RSS MB) of one download read chunk by chunk."""
    last_day = (BASE + timedelta(hours=ROWS // (HOSTS * GPUS_PER_HOST), days=2)).date()
    query = {"from": BASE.date().isoformat(), "to": last_day.isoformat()}
    lines = size = 0
    with PeakRss() as memory:
        started = time.perf_counter()
        response = client.get(reverse(name), query)
        assert response.status_code == 200
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            size += len(chunk)
        seconds = time.perf_counter() - started
    return lines, size, seconds, memory.peak


def test_export_of_a_million_reservations(client, django_user_model):
    if connection.vendor != "postgresql":
        pytest.skip("the benchmark seeds with PostgreSQL COPY")
    started = time.perf_counter()
    seed(ROWS)
    seed_seconds = time.perf_counter() - started
    staff = django_user_model.objects.create(
        username="bench-staff", is_staff=True, forward_port=10001 + USERS
    )
    client.force_login(staff)
    baseline = rss_mb()

    lines, size, seconds, peak = export(client, "report-reservations-csv")
    assert lines == ROWS + 1  # header
    usage_lines, _, usage_seconds, usage_peak = export(client, "report-usage-csv")
    assert usage_lines == USERS + 1

    report = (
        f"\nseeded {ROWS:,} reservations + allocations in {seed_seconds:.1f} s\n"
        f"RSS before the exports: {baseline:.0f} MB\n"
        f"reservations CSV: {ROWS:,} rows, {size / 1e6:.0f} MB in {seconds:.2f} s = "
        f"{ROWS / seconds:,.0f} rows/s, peak RSS {peak:.0f} MB\n"
        f"usage CSV: {ROWS:,} reservations -> {USERS} users in {usage_seconds:.2f} s = "
        f"{ROWS / usage_seconds:,.0f} reservations/s, peak RSS {usage_peak:.0f} MB\n"
        f"ru_maxrss of the whole run (seeding included): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB\n"
    )
    print(report)
    # Memory must not grow with the rows; the speed is reported, not asserted (shared CPUs).
    assert peak <= 150
