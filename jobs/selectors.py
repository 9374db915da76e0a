"""Reads for batch jobs: fair-share usage, the queue in priority order, what users and
maintainers see."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField, Q, QuerySet
from django.db.models.functions import TruncWeek
from django.utils import timezone

from accounts.grant_selectors import priority_factors
from bookings.models import Reservation
from bookings.report_figures import HoursBetween
from bookings.usage import UsageFilter, week_of
from jobs.models import HostDrain, Job, JobBuild, QueueState

# Usage older than this many half-lives weighs under 0.1 %: not worth reading.
HALF_LIVES_READ = 10
# Reservations whose capacity was used: running now, or ended (window over or released).
USED_STATUSES = (Reservation.Status.STARTING, Reservation.Status.RUNNING, Reservation.Status.ENDED)


def half_life() -> timedelta:
    return timedelta(days=settings.FAIR_SHARE_HALF_LIFE_DAYS)


def charge_per_hour(*, gpu_count: int, cpus: Decimal | float) -> float:
    """What one hour of a reservation or job costs in fair share: its GPUs, or for work
    without a GPU its CPUs at the lab's CPU-hour rate."""
    if gpu_count:
        return float(gpu_count)
    return float(cpus) / settings.FAIR_SHARE_CPU_HOURS_PER_GPU_HOUR


def decayed_hours(*, start: datetime, end: datetime, now: datetime, half_life_hours: float) -> float:
    """Hours of [start, min(end, now)) weighted by 2^(-age / half-life), integrated exactly:
    an hour used a half-life ago counts half, one used now counts fully."""
    end = min(end, now)
    if end <= start:
        return 0.0
    rate = math.log(2) / half_life_hours
    age_end = (now - end).total_seconds() / 3600
    age_start = (now - start).total_seconds() / 3600
    return (math.exp(-rate * age_end) - math.exp(-rate * age_start)) / rate


def usage_from_rows(
    rows: Iterable[tuple[int, datetime, datetime, int, Decimal]], *, now: datetime, half_life_hours: float
) -> dict[int, float]:
    """Decayed usage per user from (user_id, start, end, gpu_count, cpus) rows."""
    usage: dict[int, float] = defaultdict(float)
    for user_id, start, end, gpu_count, cpus in rows:
        hours = decayed_hours(start=start, end=end, now=now, half_life_hours=half_life_hours)
        usage[user_id] += hours * charge_per_hour(gpu_count=gpu_count, cpus=cpus)
    return dict(usage)


def decayed_usage(*, now: datetime, user_ids: Iterable[int] | None = None) -> dict[int, float]:
    """Each user's fair-share usage: decayed GPU-hours (CPU-hours for 0-GPU work) of their
    reservations, bookings and jobs alike, running ones up to now included. Unlike DoPQ's
    penalty it counts what ran, not how many jobs finished, and nothing resets it."""
    span = half_life()
    rows = Reservation.objects.filter(
        status__in=USED_STATUSES, start__lt=now, end__gt=now - span * HALF_LIVES_READ
    )
    if user_ids is not None:
        rows = rows.filter(user_id__in=list(user_ids))
    values = rows.values_list("user_id", "start", "end", "gpu_count", "cpus")
    return usage_from_rows(values, now=now, half_life_hours=span.total_seconds() / 3600)


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """What a scheduling pass needs of a queued job: read as plain rows, since a pass
    looks at every queued job every minute and starts only a few."""

    pk: int
    user_id: int
    host_id: int | None
    cpus: Decimal
    memory_gb: int
    gpu_count: int
    time_limit_minutes: int
    submitted_at: datetime

    @property
    def time_limit(self) -> timedelta:
        return timedelta(minutes=self.time_limit_minutes)


def queued_rows() -> list[QueuedJob]:
    """The queued jobs the scheduler may start: a job whose image is still being built
    from its upload waits outside the queue until the build is done, a held one until it
    is released."""
    fields = (
        "pk",
        "user_id",
        "host_id",
        "cpus",
        "memory_gb",
        "gpu_count",
        "time_limit_minutes",
        "submitted_at",
    )
    ready = Job.objects.queued().filter(held_at__isnull=True).exclude(build__status=JobBuild.Status.BUILDING)
    return [QueuedJob(*row) for row in ready.values_list(*fields)]


def priority_key(job: Job | QueuedJob, usage: dict[int, float]) -> tuple[float, datetime, int]:
    """Queue order: lower decayed usage first, then submit time, then id."""
    return (usage.get(job.user_id, 0.0), job.submitted_at, job.pk)


def priority_usage(*, now: datetime, user_ids: Iterable[int] | None = None) -> dict[int, float]:
    """Fair-share usage as the queues order by it (jobs, and the bookings' waitlist): the
    decayed usage, times the factor of a priority boost granted for now (accounts grants)."""
    usage = decayed_usage(now=now, user_ids=user_ids)
    factors = priority_factors(now=now, user_ids=user_ids)
    return {user_id: hours * factors.get(user_id, 1.0) for user_id, hours in usage.items()}


def fair_share_order(jobs: list[QueuedJob], now: datetime) -> list[QueuedJob]:
    """The queue as the lab runs it: lower (boosted) decayed usage first, then submit time."""
    usage = priority_usage(now=now, user_ids={job.user_id for job in jobs})
    return sorted(jobs, key=lambda job: priority_key(job, usage))


def queue_positions(*, now: datetime) -> dict[int, int]:
    """Each queued job's place in the queue (1 = next), read when shown rather than stored:
    every start moves everyone behind it, and a pass should not rewrite the whole queue."""
    return {job.pk: position for position, job in enumerate(fair_share_order(queued_rows(), now), start=1)}


def queue_state() -> QueueState:
    state, _ = QueueState.objects.get_or_create(pk=1)
    return state


def drained_host_ids() -> set[int]:
    return set(HostDrain.objects.values_list("host_id", flat=True))


def queued_count(*, user_id: int) -> int:
    return Job.objects.queued().filter(user_id=user_id).count()


def jobs_for_user(*, user_id: int) -> QuerySet[Job]:
    return Job.objects.filter(user_id=user_id).select_related("host", "image", "planned_host", "reservation")


def job_for_owner(*, user_id: int, pk: int) -> Job | None:
    """One of the user's jobs; None for anyone else's (the page answers 404)."""
    return jobs_for_user(user_id=user_id).filter(pk=pk).first()


@dataclass(frozen=True)
class UserJobStats:
    user_id: int
    username: str
    usage: float
    queued: int
    running: int
    succeeded: int
    failed: int
    gpu_hours: float


def job_statistics(*, now: datetime) -> list[UserJobStats]:
    """Per user with jobs: fair-share usage, jobs by outcome, GPU-hours jobs used."""
    counts = Job.objects.values("user_id", "user__username").annotate(
        queued=Count("pk", filter=Q(status=Job.Status.QUEUED)),
        running=Count("pk", filter=Q(status__in=Job.ACTIVE_STATUSES)),
        succeeded=Count("pk", filter=Q(status=Job.Status.SUCCEEDED)),
        failed=Count("pk", filter=Q(status__in=(Job.Status.FAILED, Job.Status.TIMED_OUT))),
    )
    gpu_hours: dict[int, float] = defaultdict(float)
    ran = Job.objects.filter(started_at__isnull=False, gpu_count__gt=0).values_list(
        "user_id", "started_at", "finished_at", "gpu_count"
    )
    for user_id, started_at, finished_at, gpu_count in ran:
        gpu_hours[user_id] += ((finished_at or now) - started_at).total_seconds() / 3600 * gpu_count
    usage = decayed_usage(now=now)
    return sorted(
        (
            UserJobStats(
                user_id=row["user_id"],
                username=row["user__username"],
                usage=usage.get(row["user_id"], 0.0),
                queued=row["queued"],
                running=row["running"],
                succeeded=row["succeeded"],
                failed=row["failed"],
                gpu_hours=gpu_hours.get(row["user_id"], 0.0),
            )
            for row in counts
        ),
        key=lambda stats: (stats.usage, stats.username),
    )


@dataclass(frozen=True)
class QueueStats:
    queued: int
    running: int
    median_wait: timedelta | None
    longest_wait_now: timedelta | None


def job_waits(*, since: datetime) -> list[timedelta]:
    """How long each job started since `since` waited, from its submission to its start."""
    wait = ExpressionWrapper(F("started_at") - F("submitted_at"), output_field=DurationField())
    return list(Job.objects.filter(started_at__gte=since).values_list(wait, flat=True))


def job_counts_by_status() -> dict[str, int]:
    rows = Job.objects.order_by().values_list("status").annotate(count=Count("pk"))
    return {status: 0 for status in Job.Status.values} | dict(rows)


def queue_statistics(*, now: datetime, since: datetime) -> QueueStats:
    """Queue length now and waits: the median wait of jobs started since `since`, and how
    long the oldest queued job has waited."""
    waits = sorted(job_waits(since=since))
    oldest = Job.objects.queued().order_by("submitted_at").values_list("submitted_at", flat=True).first()
    return QueueStats(
        queued=Job.objects.queued().count(),
        running=Job.objects.active().count(),
        median_wait=waits[len(waits) // 2] if waits else None,
        longest_wait_now=(now - oldest) if oldest else None,
    )


# Job waits for the usage page -------------------------------------------------------


class Percentile(Aggregate):
    """PostgreSQL's continuous percentile of a number (interpolated, like the fallback)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _interpolated(ordered: list[float], fraction: float) -> float:
    """percentile_cont's rule, for databases without it."""
    position = fraction * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@dataclass(frozen=True)
class WeekWaits:
    week: date
    jobs: int
    median_hours: float
    p95_hours: float


def job_waits_by_week(usage_filter: UsageFilter) -> list[WeekWaits]:
    """Per week of submission: how many jobs started and the median and 95th percentile of
    their wait (submitted to started). A job belongs to the host its capacity was on."""
    jobs = Job.objects.filter(
        usage_filter.user_q("user"),
        submitted_at__gte=usage_filter.start,
        submitted_at__lt=usage_filter.end,
        started_at__isnull=False,
    )
    if usage_filter.host_id is not None:
        jobs = jobs.filter(reservation__host_id=usage_filter.host_id)
    jobs = jobs.annotate(
        week=TruncWeek("submitted_at", tzinfo=timezone.get_current_timezone()),
        wait=HoursBetween(F("started_at"), F("submitted_at")),
    )
    if connection.vendor == "postgresql":
        rows = (
            jobs.values("week")
            .annotate(
                count=Count("pk"),
                median=Percentile("wait", fraction=0.5),
                p95=Percentile("wait", fraction=0.95),
            )
            .order_by("week")
        )
        return [WeekWaits(week_of(r["week"]), r["count"], r["median"], r["p95"]) for r in rows]
    # SQLite (the first-run default) has no percentile: the waits, sorted by the database.
    by_week: dict[date, list[float]] = defaultdict(list)
    for week, wait in jobs.order_by("week", "wait").values_list("week", "wait"):
        by_week[week_of(week)].append(wait)
    return [
        WeekWaits(week, len(waits), _interpolated(waits, 0.5), _interpolated(waits, 0.95))
        for week, waits in sorted(by_week.items())
    ]
