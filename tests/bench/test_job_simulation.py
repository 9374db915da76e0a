"""A simulated two weeks: fixed bookings plus batch jobs from three heavy and six light users
(the shape of an outside workload, several seeds), run through the real scheduler, capacity
engine and services, with a fake runtime that "runs" each job for its duration (a job ends
when its time is up; no containers).

The same trace is run under three policies, each in a transaction rolled back afterwards:
- FIFO: submit order, nothing starts behind a head that cannot (DoPQ's loop);
- DoPQ's penalty: order by sum(exp(-i)) over the history positions i of the user's finished
  jobs (0 = most recent), then submit time; no backfill;
- ours: fair share (decayed GPU-hours of bookings and jobs) with EASY backfill.
All three hold capacity through the capacity engine, so none touches a booking.

Figures: the GPU-hours jobs used as a share of the GPU-hours bookings left free while jobs
waited (goal >= 90 %), reservations a job delayed (goal 0), and each kind of user's median
and 90th-percentile wait, and the makespan of the heavy users' work
(from the trace's start to their last job's end; light jobs arrive until the last day)."""

import math
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from bookings.models import GpuAllocation, Reservation
from containers.services import reservation_mark_running, reservation_mark_starting
from jobs.models import Job
from jobs.scheduling import FAIR_SHARE, Policy, run_pass
from jobs.services import job_finish, job_mark_running, job_submit
from tests.bench.conftest import machine
from tests.factories import CapabilityProfileFactory, HostFactory, ImageFactory, UserFactory, local

T0 = local(2026, 3, 2, 0, 0)
DAYS = 14
HOSTS, GPUS_PER_HOST = 2, 4
BOOKINGS = 6
HEAVY_USERS, HEAVY_JOBS = 3, 8  # each heavy user's jobs
LIGHT_USERS, LIGHT_JOBS = 6, 3  # each light user's jobs
SEEDS = (7, 11, 23, 42, 99)
STOP_AT = T0 + timedelta(days=DAYS + 14)


def fifo_order(jobs: list[Job], now: datetime) -> list[Job]:
    return sorted(jobs, key=lambda job: (job.submitted_at, job.pk))


def dopq_order(jobs: list[Job], now: datetime) -> list[Job]:
    """DoPQ's model_helper.calc_penalty: only finished jobs count, the most recent weighs 1."""
    history = Job.objects.filter(finished_at__isnull=False).order_by("-finished_at", "-pk")
    penalty: dict[int, float] = {}
    for position, user_id in enumerate(history.values_list("user_id", flat=True)):
        penalty[user_id] = penalty.get(user_id, 0.0) + math.exp(-position)
    return sorted(jobs, key=lambda job: (penalty.get(job.user_id, 0.0), job.submitted_at, job.pk))


POLICIES = [
    Policy("FIFO (no backfill)", fifo_order, backfill=False),
    Policy("DoPQ penalty (no backfill)", dopq_order, backfill=False),
    FAIR_SHARE,
]


@dataclass(frozen=True)
class Arrival:
    at: datetime
    username: str
    gpus: int
    minutes: int
    runs_for: timedelta


@dataclass
class Outcome:
    used: float = 0.0  # GPU-hours jobs held while some job waited
    free: float = 0.0  # GPU-hours bookings left free while some job waited
    waits: dict[str, list[float]] = field(default_factory=dict)
    unfinished: int = 0
    delayed_bookings: int = 0
    passes: int = 0
    last_end: datetime | None = None  # the heavy users' last job's end: their makespan
    seconds: float = 0.0


def build_trace(rng: random.Random) -> tuple[list[tuple[datetime, datetime, int]], list[Arrival]]:
    # Every limit the host maximum; a heavy user's whole backlog may wait at once.
    CapabilityProfileFactory(is_default=True, queued_jobs=HEAVY_JOBS)
    ImageFactory(is_default=True)
    hosts = [
        HostFactory(name=f"sim-{n}", cpus=32, ram_gb=128, swap_gb=32, gpus=GPUS_PER_HOST)
        for n in range(HOSTS)
    ]
    bookings, taken = [], {}
    while len(bookings) < BOOKINGS:
        host = rng.choice(hosts)
        start = T0 + timedelta(minutes=30 * rng.randrange(0, DAYS * 48))
        end = start + timedelta(hours=rng.choice((8, 24, 48)))
        gpus = rng.sample(host.active_gpus, rng.choice((1, 2, 2, 4)))
        if any(s < end and e > start for gpu in gpus for s, e in taken.get(gpu.pk, [])):
            continue
        reservation = Reservation.objects.create(
            user=UserFactory(username=f"booker{len(bookings):02d}"),
            host=host,
            start=start,
            end=end,
            booked_end=end,
            cpus=Decimal(4),
            memory_gb=16,
            gpu_count=len(gpus),
            forward_port=10000,
        )
        for gpu in gpus:
            taken.setdefault(gpu.pk, []).append((start, end))
            GpuAllocation.objects.create(reservation=reservation, gpu=gpu, start=start, end=end)
        bookings.append((start, end, len(gpus)))
    arrivals = []
    for n in range(HEAVY_USERS):
        UserFactory(username=f"heavy{n}")
        for _ in range(HEAVY_JOBS):
            # Bursts in the first week: long multi-GPU training runs.
            at = T0 + timedelta(minutes=rng.randrange(0, 7 * 24 * 60))
            minutes = rng.choice((480, 720, 1440))
            gpus = rng.choice((2, 2, 4))
            runs_for = timedelta(minutes=minutes * rng.uniform(0.5, 1.0))
            arrivals.append(Arrival(at, f"heavy{n}", gpus, minutes, runs_for))
    for n in range(LIGHT_USERS):
        UserFactory(username=f"light{n}")
        for _ in range(LIGHT_JOBS):
            at = T0 + timedelta(minutes=rng.randrange(0, DAYS * 24 * 60))
            minutes = rng.choice((60, 120, 240))
            runs_for = timedelta(minutes=minutes * rng.uniform(0.3, 1.0))
            arrivals.append(Arrival(at, f"light{n}", 1, minutes, runs_for))
    arrivals.sort(key=lambda arrival: arrival.at)
    return bookings, arrivals


def booked_gpus(bookings, moment: datetime) -> int:
    return sum(gpus for start, end, gpus in bookings if start <= moment < end)


def simulate(policy: Policy, bookings, arrivals: list[Arrival]) -> Outcome:
    from accounts.models import User

    users = {user.username: user for user in User.objects.all()}
    total_gpus = HOSTS * GPUS_PER_HOST
    outcome = Outcome()
    runs_for: dict[int, timedelta] = {}
    ends: dict[int, datetime] = {}
    pending = list(arrivals)
    boundaries = sorted({moment for start, end, _ in bookings for moment in (start, end)})
    now = T0
    began = time.perf_counter()
    while now < STOP_AT:
        for job_id, end in sorted(ends.items(), key=lambda item: item[1]):
            if end <= now:
                job_finish(job=Job.objects.get(pk=job_id), status=Job.Status.SUCCEEDED, exit_code=0, now=end)
                del ends[job_id]
        while pending and pending[0].at <= now:
            arrival = pending.pop(0)
            job = job_submit(
                user=users[arrival.username],
                command="python train.py",
                cpus=2,
                memory_gb=8,
                gpu_count=arrival.gpus,
                time_limit_minutes=arrival.minutes,
                now=arrival.at,
            )
            runs_for[job.pk] = arrival.runs_for
        report = run_pass(now=now, policy=policy)
        outcome.passes += 1
        for job in Job.objects.filter(pk__in=report.started).select_related("reservation", "user"):
            # As the job lifecycle does: the reservation goes starting, then running, so
            # fair share (decayed_usage) charges the job while it runs, as in production.
            reservation_mark_starting(reservation=job.reservation)
            reservation_mark_running(reservation=job.reservation, container_id=f"sim-{job.pk}", now=now)
            job_mark_running(job=job, now=now)
            ends[job.pk] = now + runs_for[job.pk]
            if job.user.username.startswith("heavy"):
                outcome.last_end = max(outcome.last_end or now, ends[job.pk])
        if not pending and not ends and not Job.objects.queued().exists():
            break
        later = [moment for moment in boundaries if moment > now]
        upcoming = [*ends.values(), *(a.at for a in pending[:1]), *later[:1]]
        following = min(upcoming) if upcoming else STOP_AT
        if Job.objects.queued().exists():
            span = (following - now).total_seconds() / 3600
            running = sum(Job.objects.active().values_list("gpu_count", flat=True))
            outcome.used += running * span
            outcome.free += (total_gpus - booked_gpus(bookings, now)) * span
        now = following
    outcome.seconds = time.perf_counter() - began
    outcome.unfinished = Job.objects.exclude(status=Job.Status.SUCCEEDED).count()
    for username, submitted, started in Job.objects.filter(started_at__isnull=False).values_list(
        "user__username", "submitted_at", "started_at"
    ):
        kind = "heavy" if username.startswith("heavy") else "light"
        outcome.waits.setdefault(kind, []).append((started - submitted).total_seconds() / 3600)
    outcome.delayed_bookings = _bookings_overlapped_by_jobs()
    return outcome


def _bookings_overlapped_by_jobs() -> int:
    """Bookings whose GPUs a job allocation overlapped (the capacity engine must make it 0)."""
    rows = list(
        GpuAllocation.objects.values_list("gpu_id", "start", "end", "reservation__kind", "reservation_id")
    )
    jobs = [row for row in rows if row[3] == Reservation.Kind.JOB]
    return len(
        {
            booking[4]
            for booking in rows
            if booking[3] == Reservation.Kind.BOOKING
            for job in jobs
            if job[0] == booking[0] and job[1] < booking[2] and job[2] > booking[1]
        }
    )


def _hours(values: list[float], fraction: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]:.1f} h"


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f} h" if values else "-"


@pytest.mark.django_db
def test_two_weeks_of_jobs_under_three_policies(write_figures):
    results: dict[tuple[int, str], Outcome] = {}
    for seed in SEEDS:
        with transaction.atomic():
            bookings, arrivals = build_trace(random.Random(seed))
            for policy in POLICIES:
                with transaction.atomic():
                    results[seed, policy.name] = simulate(policy, bookings, arrivals)
                    transaction.set_rollback(True)
            transaction.set_rollback(True)
    jobs = HEAVY_USERS * HEAVY_JOBS + LIGHT_USERS * LIGHT_JOBS
    lines = [
        "# Simulated two weeks, several heavy users: FIFO, DoPQ's penalty and fair share with backfill\n",
        f"{HOSTS} hosts x {GPUS_PER_HOST} GPUs; {BOOKINGS} fixed bookings (1-4 GPUs, 8-48 h) "
        f"over {DAYS} days; "
        f"{HEAVY_USERS} heavy users submit {HEAVY_JOBS} jobs each (2 or 4 GPUs, 8-24 h limits) in the first "
        f"week, {LIGHT_USERS} light users {LIGHT_JOBS} one-GPU jobs each (1-4 h) over two weeks: {jobs} jobs "
        "a seed. Each job runs for 30-100 % of its limit (a fake runtime); a started job's reservation "
        "goes starting then running as the job lifecycle moves it, so fair share charges running jobs "
        "as production does. Real scheduler, capacity engine and services; events only (arrivals, job "
        f"ends, booking boundaries). Seeds {', '.join(map(str, SEEDS))}. Machine: {machine()}.\n",
        "| seed | policy | job GPU-hours / GPU-hours bookings left free while jobs waited | bookings delayed "
        "| light users' wait, mean (p90) | heavy users' wait, mean (p90) | heavy work's makespan "
        "| unfinished | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (seed, name), outcome in results.items():
        share = outcome.used / outcome.free if outcome.free else 1.0
        light, heavy = outcome.waits.get("light", []), outcome.waits.get("heavy", [])
        makespan = (outcome.last_end - T0).total_seconds() / 3600 if outcome.last_end else 0.0
        lines.append(
            f"| {seed} | {name} | {share:.1%} | {outcome.delayed_bookings} "
            f"| {_mean(light)} ({_hours(light, 0.9)}) | {_mean(heavy)} ({_hours(heavy, 0.9)}) "
            f"| {makespan:.1f} h | {outcome.unfinished} | {outcome.seconds:.0f} |"
        )
    lines += [
        "",
        "Mean over the seeds:",
        "",
        "| policy | utilisation of free GPU-hours | light users' mean wait "
        "| heavy users' mean wait | heavy work's makespan |",
        "|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        runs = [results[seed, policy.name] for seed in SEEDS]
        share = statistics.fmean(run.used / run.free if run.free else 1.0 for run in runs)
        light = statistics.fmean(statistics.fmean(run.waits.get("light", [0.0])) for run in runs)
        heavy = statistics.fmean(statistics.fmean(run.waits.get("heavy", [0.0])) for run in runs)
        makespan = statistics.fmean(
            (run.last_end - T0).total_seconds() / 3600 for run in runs if run.last_end is not None
        )
        lines.append(f"| {policy.name} | {share:.1%} | {light:.2f} h | {heavy:.2f} h | {makespan:.1f} h |")
    write_figures("jobs-simulation.md", "\n".join(lines) + "\n")
    for seed in SEEDS:
        ours = results[seed, FAIR_SHARE.name]
        assert ours.delayed_bookings == 0
        assert ours.unfinished == 0
