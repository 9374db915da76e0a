"""A simulated two weeks with one user who hoards: back-to-back two-GPU bookings made a day
ahead, each as the last one ends, plus a stream of two-GPU jobs; several light users send
short one-GPU jobs; other users book now and then. The same trace runs twice, each in a
transaction rolled back afterwards: without usage limits (today), and with caps at once
and a weekly GPU-hour budget on the default profile and the continuous-hold setting. The
hoarder's bookings go through `reservation_create` at the moment they are made, so the
limits refuse what breaks them; the jobs through the real scheduler, capacity engine and
services, "run" by a fake runtime for part of their limit.

Figures: the light users' p95 wait, the hoarder's share of the GPU-hours used (bookings
and jobs), and the GPU-hours jobs used as a share of the GPU-hours bookings left free while
some job waited: while any job waited, and while a job its owner's limits let run waited
(the part the scheduler is answerable for)."""

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from accounts.models import CapabilityProfile, User
from bookings.models import GpuAllocation, Reservation
from bookings.services import reservation_create
from containers.models import Host
from jobs.models import Job, WaitReason
from jobs.scheduling import run_pass
from jobs.services import job_finish, job_mark_running, job_submit
from tests.bench.conftest import machine, percentile
from tests.factories import CapabilityProfileFactory, HostFactory, ImageFactory, UserFactory, local

T0 = local(2026, 3, 2, 0, 0)
DAYS = 14
HOSTS, GPUS_PER_HOST = 2, 4
OTHER_BOOKINGS = 12
HOARD_BOOKING = timedelta(days=3)
HOARD_JOB_EVERY = timedelta(hours=2)
LIGHT_USERS = 3
LIGHT_EVERY = timedelta(hours=8)
STOP_AT = T0 + timedelta(days=DAYS + 7)
LIMITS = {"gpus_at_once": 4, "gpu_hours_per_week": Decimal(600)}
HOLD_HOURS = 7 * 24
LIMIT_REASONS = (
    WaitReason.GPUS_AT_ONCE,
    WaitReason.CPUS_AT_ONCE,
    WaitReason.MEMORY_AT_ONCE,
    WaitReason.BUDGET,
)


@dataclass(frozen=True)
class Arrival:
    at: datetime
    username: str
    gpus: int
    minutes: int
    runs_for: timedelta


@dataclass(frozen=True)
class BookingAttempt:
    at: datetime  # when the user books
    start: datetime
    gpus: int


@dataclass
class Outcome:
    used: float = 0.0  # GPU-hours jobs held while some job waited
    free: float = 0.0  # GPU-hours bookings left free while some job waited
    used_runnable: float = 0.0  # the same two while a job its limits let run waited
    free_runnable: float = 0.0
    light_waits: list[float] = field(default_factory=list)
    hoarder_share: float = 0.0
    refused_bookings: int = 0
    passes: int = 0
    seconds: float = 0.0


def build_trace(rng: random.Random) -> tuple[list[BookingAttempt], list[Arrival]]:
    CapabilityProfileFactory(is_default=True, queued_jobs=500)
    ImageFactory(is_default=True)
    hosts = [
        HostFactory(name=f"sim-{n}", cpus=32, ram_gb=128, swap_gb=32, gpus=GPUS_PER_HOST)
        for n in range(HOSTS)
    ]
    # Other users' bookings, on the second host only: the hoarder's are on the first.
    taken: dict[int, list[tuple]] = {}
    placed = 0
    while placed < OTHER_BOOKINGS:
        host = hosts[1]
        start = T0 + timedelta(minutes=30 * rng.randrange(0, DAYS * 48))
        end = start + timedelta(hours=rng.choice((4, 8, 12, 24)))
        gpus = rng.sample(host.active_gpus, rng.choice((1, 1, 2)))
        if any(s < end and e > start for gpu in gpus for s, e in taken.get(gpu.pk, [])):
            continue
        reservation = Reservation.objects.create(
            user=UserFactory(username=f"booker{placed:02d}"),
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
        placed += 1
    UserFactory(username="hoarder")
    attempts = []
    start = T0 + timedelta(hours=1)
    while start < T0 + timedelta(days=DAYS):
        attempts.append(BookingAttempt(at=max(T0, start - timedelta(days=1)), start=start, gpus=2))
        start += HOARD_BOOKING
    arrivals = []
    at = T0
    while at < T0 + timedelta(days=DAYS):
        minutes = rng.choice((240, 480, 720))
        arrivals.append(
            Arrival(at, "hoarder", 2, minutes, timedelta(minutes=minutes * rng.uniform(0.6, 1.0)))
        )
        at += HOARD_JOB_EVERY
    for n in range(LIGHT_USERS):
        UserFactory(username=f"light{n}")
        at = T0 + timedelta(minutes=rng.randrange(0, 180))
        while at < T0 + timedelta(days=DAYS):
            minutes = rng.choice((30, 60, 120))
            arrivals.append(
                Arrival(at, f"light{n}", 1, minutes, timedelta(minutes=minutes * rng.uniform(0.3, 1.0)))
            )
            at += LIGHT_EVERY + timedelta(minutes=rng.randrange(-90, 90))
    arrivals.sort(key=lambda arrival: arrival.at)
    return attempts, arrivals


def booked_gpus(moment: datetime) -> int:
    live = Reservation.objects.filter(
        kind=Reservation.Kind.BOOKING, start__lte=moment, end__gt=moment
    ).exclude(status=Reservation.Status.CANCELLED)
    return sum(live.values_list("gpu_count", flat=True))


def simulate(attempts: list[BookingAttempt], arrivals: list[Arrival]) -> Outcome:
    users = {user.username: user for user in User.objects.all()}
    hoard_host = Host.objects.get(name="sim-0")
    total_gpus = HOSTS * GPUS_PER_HOST
    outcome = Outcome()
    runs_for: dict[int, timedelta] = {}
    ends: dict[int, datetime] = {}
    pending = list(arrivals)
    booking_queue = list(attempts)
    now = T0
    began = time.perf_counter()
    while now < STOP_AT:
        for job_id, end in sorted(ends.items(), key=lambda item: item[1]):
            if end <= now:
                job_finish(job=Job.objects.get(pk=job_id), status=Job.Status.SUCCEEDED, exit_code=0, now=end)
                del ends[job_id]
        while booking_queue and booking_queue[0].at <= now:
            attempt = booking_queue.pop(0)
            try:
                reservation_create(
                    user=users["hoarder"],
                    host=hoard_host,
                    start=attempt.start,
                    end=attempt.start + HOARD_BOOKING,
                    cpus=4,
                    memory_gb=16,
                    gpu_count=attempt.gpus,
                    now=attempt.at,
                )
            except ValidationError:
                outcome.refused_bookings += 1
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
        report = run_pass(now=now)
        outcome.passes += 1
        for job in Job.objects.filter(pk__in=report.started):
            job_mark_running(job=job, now=now)
            ends[job.pk] = now + runs_for[job.pk]
        queued = Job.objects.queued()
        if not pending and not ends and not booking_queue and not queued.exists():
            break
        upcoming = [*ends.values(), *(a.at for a in pending[:1]), *(b.at for b in booking_queue[:1])]
        boundaries = Reservation.objects.filter(
            Q(start__gt=now) | Q(end__gt=now), kind=Reservation.Kind.BOOKING
        ).values_list("start", "end")
        upcoming += [moment for pair in boundaries for moment in pair if moment > now]
        following = min(upcoming) if upcoming else STOP_AT
        if queued.exists():
            span = (following - now).total_seconds() / 3600
            running = sum(Job.objects.active().values_list("gpu_count", flat=True))
            free = (total_gpus - booked_gpus(now)) * span
            outcome.used += running * span
            outcome.free += free
            if queued.exclude(wait_reason__in=LIMIT_REASONS).exists():
                outcome.used_runnable += running * span
                outcome.free_runnable += free
        now = following
    outcome.seconds = time.perf_counter() - began
    for username, submitted, started in Job.objects.filter(started_at__isnull=False).values_list(
        "user__username", "submitted_at", "started_at"
    ):
        if username.startswith("light"):
            outcome.light_waits.append((started - submitted).total_seconds() / 3600)
    held = Reservation.objects.filter(status__in=(Reservation.Status.ENDED, *Reservation.LIVE_STATUSES))
    hours: dict[bool, float] = {True: 0.0, False: 0.0}
    for username, start, end, gpus in held.values_list("user__username", "start", "end", "gpu_count"):
        hours[username == "hoarder"] += gpus * (min(end, STOP_AT) - start).total_seconds() / 3600
    outcome.hoarder_share = hours[True] / (hours[True] + hours[False])
    return outcome


@pytest.mark.django_db
def test_a_hoarder_with_and_without_limits(write_figures, settings):
    attempts, arrivals = build_trace(random.Random(11))
    results = {}
    for name, limits, hold in (("limits off (today)", {}, 0), ("limits on", LIMITS, HOLD_HOURS)):
        settings.MAX_CONTINUOUS_GPU_HOLD_HOURS = hold
        with transaction.atomic():
            CapabilityProfile.objects.filter(is_default=True).update(**limits)
            results[name] = simulate(attempts, arrivals)
            transaction.set_rollback(True)
    lines = [
        "# Simulated two weeks with a hoarder: usage limits off and on\n",
        f"{HOSTS} hosts x {GPUS_PER_HOST} GPUs over {DAYS} days. The hoarder books two GPUs for three days "
        f"back to back (each booking made a day ahead) and submits a two-GPU job (4-12 h limit) every "
        f"{HOARD_JOB_EVERY.total_seconds() / 3600:g} h; {LIGHT_USERS} light users send a one-GPU job "
        f"(30-120 min) about every {LIGHT_EVERY.total_seconds() / 3600:g} h; {OTHER_BOOKINGS} other "
        "bookings (1-2 GPUs, 4-24 h). Jobs run for part of their limit (a fake runtime). Limits on: "
        f"{LIMITS['gpus_at_once']} GPUs at once, {LIMITS['gpu_hours_per_week']} GPU-hours per 7 days "
        f"(default profile), at most {HOLD_HOURS} h of continuous GPU hold. Machine: {machine()}.\n",
        "| limits | light users' wait p95 (median) | hoarder's share of GPU-hours used | hoarder's "
        "bookings refused | job GPU-hours / free GPU-hours while any job waited | ... while a job its "
        "limits let run waited | passes | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, outcome in results.items():
        light = outcome.light_waits
        used = outcome.used / outcome.free if outcome.free else 1.0
        runnable = outcome.used_runnable / outcome.free_runnable if outcome.free_runnable else 1.0
        lines.append(
            f"| {name} | {percentile(light, 0.95):.1f} h ({percentile(light, 0.5):.1f} h) "
            f"| {outcome.hoarder_share:.1%} | {outcome.refused_bookings} | {used:.1%} | {runnable:.1%} "
            f"| {outcome.passes} | {outcome.seconds:.0f} |"
        )
    write_figures("limits-simulation.md", "\n".join(lines) + "\n")
    off, on = results["limits off (today)"], results["limits on"]
    assert percentile(on.light_waits, 0.95) <= percentile(off.light_waits, 0.95)
    assert on.hoarder_share < off.hoarder_share
