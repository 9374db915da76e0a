"""Every write that touches capacity takes its locks in one order (the host row, then the
reservation), so concurrent bookings, cancellations, extensions and releases on one host
queue instead of deadlocking. Real threads on PostgreSQL, then an independent check of
the stored rows."""

import random
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from bookings.models import Reservation
from bookings.services import (
    reservation_cancel,
    reservation_create,
    reservation_extend,
    reservation_release,
)
from bookings.timeslots import SLOT
from tests.factories import CapabilityProfileFactory, HostFactory, ImageFactory, UserFactory, local

NOW = local(2026, 3, 2, 10, 10)
THREADS = 8
ATTEMPTS = 4000
TIME_LIMIT = timedelta(seconds=20)

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks and deadlocks are PostgreSQL's to show"
)


def _attempt(rng: random.Random, *, host, users, made: list[Reservation], made_lock: threading.Lock) -> str:
    """One random write; returns the operation's name, raises what the service raised."""
    operation = rng.choice(("create", "create", "cancel", "extend", "release"))
    with made_lock:
        target = rng.choice(made) if made else None
    if operation == "create" or target is None:
        start = "now" if rng.random() < 0.3 else NOW.replace(minute=0) + SLOT * rng.randint(1, 12)
        base = NOW.replace(minute=0) if start == "now" else start
        reservation = reservation_create(
            user=rng.choice(users),
            host=host,
            start=start,
            end=base + SLOT * rng.randint(1, 6),
            cpus=rng.randint(1, 4),
            memory_gb=rng.randint(1, 16),
            gpu_count=rng.randint(0, 2),
            now=NOW,
        )
        with made_lock:
            made.append(reservation)
        return "create"
    if operation == "cancel":
        reservation_cancel(reservation=target, now=NOW)
    elif operation == "extend":
        reservation_extend(reservation=target, end=target.end + SLOT * rng.randint(1, 4), now=NOW)
    else:
        reservation_release(reservation=target, now=NOW)
    return operation


def _hammer(*, host, users, seed: int) -> tuple[Counter, list[str]]:
    made: list[Reservation] = []
    made_lock = threading.Lock()
    done: Counter = Counter()
    errors: list[str] = []
    counter = iter(range(ATTEMPTS))
    counter_lock = threading.Lock()
    deadline = time.monotonic() + TIME_LIMIT.total_seconds()
    barrier = threading.Barrier(THREADS)

    def work(thread_seed: int) -> None:
        rng = random.Random(thread_seed)
        barrier.wait()
        try:
            while time.monotonic() < deadline:
                with counter_lock:
                    if next(counter, None) is None:
                        return
                try:
                    done[_attempt(rng, host=host, users=users, made=made, made_lock=made_lock)] += 1
                except ValidationError:
                    done["refused"] += 1
                except Exception as error:  # recorded: anything but a clear refusal fails the test
                    errors.append(f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(seed + n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIME_LIMIT.total_seconds() + 30)
    return done, errors


def _violations(host_id: int) -> list[str]:
    """The invariants, checked in SQL and plain Python apart from the booking code."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT a.id, b.id FROM bookings_gpuallocation a JOIN bookings_gpuallocation b
               ON a.gpu_id = b.gpu_id AND a.id < b.id AND a.start < b."end" AND b.start < a."end"
               WHERE a.active AND b.active"""
        )
        found += [f"GPU held twice: allocations {pair}" for pair in cursor.fetchall()]
        cursor.execute(
            """SELECT a.id, b.id FROM bookings_reservation a JOIN bookings_reservation b
               ON a.user_id = b.user_id AND a.id < b.id AND a.start < b."end" AND b.start < a."end"
               WHERE a.status = ANY(%(live)s) AND b.status = ANY(%(live)s)
               AND a.kind = 'booking' AND b.kind = 'booking'""",
            {"live": list(Reservation.LIVE_STATUSES)},
        )
        found += [f"user booked twice: reservations {pair}" for pair in cursor.fetchall()]
        cursor.execute(
            """SELECT r.start, r."end", r.cpus, r.memory_gb, h.cpus, h.ram_gb + h.swap_gb
               FROM bookings_reservation r JOIN containers_host h ON h.id = r.host_id
               WHERE r.host_id = %(host)s AND r.status = ANY(%(live)s)""",
            {"host": host_id, "live": list(Reservation.LIVE_STATUSES)},
        )
        rows = cursor.fetchall()
    # Load is highest right at some reservation's start: check the sum there.
    for moment in {row[0] for row in rows}:
        cpus = sum((row[2] for row in rows if row[0] <= moment < row[1]), Decimal(0))
        memory = sum(row[3] for row in rows if row[0] <= moment < row[1])
        if rows and (cpus > rows[0][4] or memory > rows[0][5]):
            found.append(f"over the host at {moment}: {cpus} CPUs, {memory} GB")
    return found


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_cancels_extends_and_releases_on_one_host_never_deadlock():
    CapabilityProfileFactory(is_default=True, cpus=8, memory_gb=32, gpus=2)
    ImageFactory(is_default=True)
    host = HostFactory(cpus=16, ram_gb=64, swap_gb=16, gpus=4)
    users = [UserFactory() for _ in range(40)]

    done, errors = _hammer(host=host, users=users, seed=12)

    assert errors == [], f"{len(errors)} attempts failed unclearly, first: {errors[:3]}"
    assert sum(done.values()) >= 500, f"too few attempts in the time limit: {done}"
    assert all(done[operation] for operation in ("create", "cancel", "extend", "release")), done
    assert _violations(host.pk) == []
