"""The waitlist tick on a full lab: 100 waiting requests from 40 users over 4 hosts x 8 GPUs,
every GPU booked for the next two weeks, so every request is tried and none fits (the
tick's worst minute). Then the same tick after one GPU's booking ends tomorrow: one request is booked.
Each sample is one whole `waitlist_book_due` (expiry, the fair-share order, an
earliest-fit search per request, the booking through `reservation_create`), rolled back."""

import random
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from bookings.models import GpuAllocation, Reservation, WaitlistEntry
from bookings.waitlist_services import waitlist_book_due
from jobs.selectors import priority_usage
from tests.bench.conftest import machine, summary
from tests.factories import CapabilityProfileFactory, HostFactory, ImageFactory, UserFactory, local

NOW = local(2026, 3, 2, 10, 10)
HOSTS, GPUS, WAITING, USERS, SAMPLES = 4, 8, 100, 40, 10


def build_full_lab(rng: random.Random) -> list[Reservation]:
    CapabilityProfileFactory(is_default=True)
    image = ImageFactory(is_default=True)
    hosts = [HostFactory(name=f"wl-{n}", cpus=64, ram_gb=256, swap_gb=64, gpus=GPUS) for n in range(HOSTS)]
    holders = []
    allocations = []
    for host in hosts:
        for gpu in host.active_gpus:
            holder = UserFactory(username=f"holder-{gpu.pk}")
            reservation = Reservation.objects.create(
                user=holder,
                host=host,
                start=NOW - timedelta(hours=1),
                end=NOW + timedelta(days=15),
                booked_end=NOW + timedelta(days=15),
                cpus=Decimal(2),
                memory_gb=8,
                gpu_count=1,
                image=image,
                forward_port=holder.forward_port,
                status=Reservation.Status.RUNNING,
            )
            allocations.append(
                GpuAllocation(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
            )
            holders.append(reservation)
    GpuAllocation.objects.bulk_create(allocations)
    users = [UserFactory(username=f"waiter{n:03d}") for n in range(USERS)]
    WaitlistEntry.objects.bulk_create(
        WaitlistEntry(
            user=users[n % USERS],
            host=None if n % 3 == 0 else hosts[n % HOSTS],
            mode=WaitlistEntry.Mode.FIRST_AFTER,
            earliest_start=NOW + timedelta(hours=rng.randrange(1, 48)),
            latest_start=NOW + timedelta(days=13),
            duration_minutes=60 * rng.choice((2, 8, 24)),
            cpus=Decimal(2),
            memory_gb=8,
            gpu_count=rng.choice((1, 1, 2)),
            created_at=NOW - timedelta(minutes=n),
        )
        for n in range(WAITING)
    )
    return holders


def timed_ticks(count: int) -> tuple[list[float], list]:
    samples, reports = [], []
    for _ in range(count):
        with transaction.atomic():
            began = time.perf_counter()
            reports.append(waitlist_book_due(now=NOW, usage=priority_usage(now=NOW)))
            samples.append(time.perf_counter() - began)
            transaction.set_rollback(True)
    return samples, reports


def row(name: str, samples: list[float], booked: int) -> str:
    figures = summary(samples)
    return (
        f"| {name} | {figures['p50'] * 1000:.0f} ms | {figures['p95'] * 1000:.0f} ms "
        f"| {figures['mean'] * 1000:.0f} ms | {booked} |\n"
    )


@pytest.mark.django_db
def test_a_waitlist_tick_over_100_waiting_requests(write_figures):
    holders = build_full_lab(random.Random(7))
    full, full_reports = timed_ticks(SAMPLES)
    # One GPU's booking ends tomorrow instead: waiters fit after it, one after another, in
    # fair-share order.
    freed = holders[0]
    freed.end = freed.booked_end = NOW + timedelta(days=1)
    freed.save()
    freed.allocations.update(end=freed.end)
    one_free, one_free_reports = timed_ticks(SAMPLES)
    assert not full_reports[-1].booked and one_free_reports[-1].booked
    write_figures(
        "waitlist.md",
        "# Waitlist tick\n\n"
        f"{WAITING} waiting requests (first window after a start, 2-24 h, 1-2 GPUs, a third on any host) "
        f"from {USERS} users, {HOSTS} hosts x {GPUS} GPUs, every GPU booked for two weeks. Each sample "
        "is one whole `waitlist_book_due` (expiry, fair-share order, an earliest-fit search per request "
        "over its hosts, a booking through `reservation_create`), rolled back. "
        f"{machine()}; the database the test ran on.\n\n"
        "| tick | p50 | p95 | mean | booked |\n|---|---|---|---|---|\n"
        + row(f"full lab, nothing fits ({SAMPLES} samples)", full, len(full_reports[-1].booked))
        + row(
            f"one GPU's booking ends tomorrow ({SAMPLES} samples)", one_free, len(one_free_reports[-1].booked)
        ),
    )
