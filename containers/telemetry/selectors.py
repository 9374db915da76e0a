"""Reads over the GPU samples: who holds a GPU now, a reservation's utilisation, whether it
sits idle, the live GPU table and GPU-hours busy for the usage report."""

import socket
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, models
from django.db.models import Avg, Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncWeek
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from bookings.models import GpuAllocation, Reservation
from bookings.usage import UsageFilter, week_of
from containers.inventory_selectors import Health, agent_health
from containers.models import Gpu, Host
from containers.telemetry.models import GpuSample, ReservationGpuStatus

# The sampling task runs every minute, so each sample stands for one GPU-minute.
SAMPLE_INTERVAL = timedelta(minutes=1)
# A sample older than this is not shown as live: the sampler has stopped or NVML is gone.
FRESH_FOR = timedelta(minutes=3)
# How far the first and last samples of an idle window may sit from its edges: a window
# with holes this large at either end has too little data to call the GPUs idle.
COVERAGE_SLACK = timedelta(minutes=5)


def telemetry_host(*, name: str = "") -> Host | None:
    """The Host whose GPUs this machine's NVML reports: `name`, else the agent's own host
    (AIVC_HOST), else GPU_HOST_NAME, else the host named like this machine, else the only
    host there is. The central scheduler never answers a host that has its own agent: that
    agent samples it."""
    wanted = name or settings.AIVC_HOST or settings.GPU_HOST_NAME
    if wanted:
        host = Host.objects.filter(name=wanted).first()
    else:
        machine = socket.gethostname()
        host = Host.objects.filter(name__in=[machine, machine.split(".")[0]]).first()
        if host is None:
            hosts = list(Host.objects.all()[:2])
            host = hosts[0] if len(hosts) == 1 else None
    if host is not None and host.served_by_agent and not settings.AIVC_HOST:
        return None
    return host


def current_gpu_holders(*, host: Host, now: datetime) -> dict[int, Reservation]:
    """GPU id -> the live reservation whose allocation covers `now`."""
    allocations = GpuAllocation.objects.filter(
        gpu__host=host,
        active=True,
        start__lte=now,
        end__gt=now,
        reservation__status__in=Reservation.LIVE_STATUSES,
    ).select_related("reservation__user")
    return {allocation.gpu_id: allocation.reservation for allocation in allocations}


def gpus_just_given_up(*, host: Host, now: datetime, within: timedelta) -> dict[int, list[Reservation]]:
    """GPU id -> the reservations with a container whose hold on that GPU ended in the last
    `within`: released, or at the end of their window, their containers may still be on
    their way out (the reconcile tick removes them, a job's stop waits its grace period)."""
    allocations = (
        GpuAllocation.objects.filter(gpu__host=host, end__gt=now - within, end__lte=now)
        .exclude(reservation__container_id="")
        .select_related("reservation__user")
    )
    given_up: dict[int, list[Reservation]] = {}
    for allocation in allocations:
        given_up.setdefault(allocation.gpu_id, []).append(allocation.reservation)
    return given_up


def reservations_with_containers(*, host: Host) -> list[Reservation]:
    """Live reservations on `host` whose container id the scheduler has recorded."""
    return list(Reservation.objects.live().filter(host=host).exclude(container_id="").select_related("user"))


def _samples_in_allocations(**allocation_lookups: object) -> QuerySet[GpuSample]:
    """Samples taken while an active allocation (narrowed by `allocation_lookups`) held the
    GPU. One filter() call, so every condition applies to the same allocation."""
    lookups = {f"gpu__allocations__{key}": value for key, value in allocation_lookups.items()}
    return GpuSample.objects.filter(
        gpu__allocations__active=True,
        gpu__allocations__start__lte=F("taken_at"),
        gpu__allocations__end__gt=F("taken_at"),
        **lookups,
    )


@dataclass(frozen=True)
class GpuUsage:
    index: int
    memory_total_mb: int
    mean_utilisation_percent: float | None
    peak_memory_mb: int | None
    sample_count: int


@dataclass(frozen=True)
class ReservationGpuUsage:
    """Over the reservation's allocation windows: mean utilisation of all its GPU-minutes,
    and the most memory used on any one of its GPUs."""

    mean_utilisation_percent: float | None
    peak_memory_mb: int | None
    sample_count: int
    per_gpu: tuple[GpuUsage, ...]
    idle_flagged_at: datetime | None


def reservation_gpu_usage(*, reservation: Reservation) -> ReservationGpuUsage:
    samples = _samples_in_allocations(reservation=reservation)
    figures = {"mean": Avg("utilisation_percent"), "peak": Max("memory_used_mb"), "count": Count("id")}
    overall = samples.aggregate(**figures)
    per_gpu = samples.values("gpu__index", "gpu__memory_mb").annotate(**figures).order_by("gpu__index")
    status = ReservationGpuStatus.objects.filter(reservation=reservation).first()
    return ReservationGpuUsage(
        mean_utilisation_percent=overall["mean"],
        peak_memory_mb=overall["peak"],
        sample_count=overall["count"],
        per_gpu=tuple(
            GpuUsage(
                index=row["gpu__index"],
                memory_total_mb=row["gpu__memory_mb"],
                mean_utilisation_percent=row["mean"],
                peak_memory_mb=row["peak"],
                sample_count=row["count"],
            )
            for row in per_gpu
        ),
        idle_flagged_at=status.idle_flagged_at if status else None,
    )


def reservation_idle_state(*, reservation: Reservation, now: datetime) -> bool | None:
    """True: every GPU of the reservation stayed under GPU_IDLE_UTILISATION_PERCENT for the
    last GPU_IDLE_MINUTES. False: one was busy in that time. None: too little data to say
    (running for a shorter time, or the samples do not cover the window)."""
    window_start = now - timedelta(minutes=settings.GPU_IDLE_MINUTES)
    figures = (
        _samples_in_allocations(reservation=reservation)
        .filter(taken_at__gt=window_start, taken_at__lte=now, utilisation_percent__isnull=False)
        .aggregate(busiest=Max("utilisation_percent"), first=Min("taken_at"), last=Max("taken_at"))
    )
    if figures["first"] is None:
        return None
    if figures["busiest"] >= settings.GPU_IDLE_UTILISATION_PERCENT:
        return False
    running_since = reservation.started_at or reservation.start
    covered = figures["first"] <= window_start + COVERAGE_SLACK and figures["last"] >= now - COVERAGE_SLACK
    return True if covered and running_since <= window_start else None


def idle_reservations_for_user(*, user_id: int) -> QuerySet[Reservation]:
    """The user's running reservations flagged idle, for the dashboard."""
    return Reservation.objects.filter(
        user_id=user_id,
        status=Reservation.Status.RUNNING,
        gpu_status__idle_flagged_at__isnull=False,
    ).select_related("host", "gpu_status")


@dataclass(frozen=True)
class GpuTableRow:
    host_name: str
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int | None
    utilisation_percent: int | None
    process_count: int | None
    taken_at: datetime | None
    holder_username: str
    reservation_id: int | None
    is_idle: bool


@dataclass(frozen=True)
class GpuTable:
    rows: tuple[GpuTableRow, ...]

    @property
    def available(self) -> bool:
        """Whether any GPU has a fresh sample; otherwise the page says so instead."""
        return any(row.taken_at is not None for row in self.rows)


def _latest_fresh_samples(*, now: datetime) -> QuerySet[GpuSample]:
    """Each GPU's samples younger than FRESH_FOR, its newest first: one read over the
    taken_at index (a few rows per GPU, one a minute), rather than one "latest sample"
    lookup per GPU (400 on a lab of 50 eight-GPU servers). On PostgreSQL only the newest of
    each GPU comes back (DISTINCT ON); elsewhere callers keep the first of each."""
    fresh = GpuSample.objects.filter(taken_at__gt=now - FRESH_FOR).order_by("gpu_id", "-taken_at")
    return fresh.distinct("gpu_id") if connection.features.can_distinct_on_fields else fresh


@dataclass(frozen=True)
class FreshSample:
    host_name: str
    index: int
    utilisation_percent: int | None
    memory_used_mb: int


def fresh_gpu_samples(*, now: datetime) -> list[FreshSample]:
    """The latest fresh sample of each active GPU, as plain values (no model rows: the
    metrics scrape reads hundreds); a GPU with none (its sampler stopped) is left out rather
    than shown with old figures."""
    rows = _latest_fresh_samples(now=now).filter(gpu__is_active=True)
    latest: dict[int, FreshSample] = {}
    for gpu_id, host_name, index, utilisation, memory in rows.values_list(
        "gpu_id", "gpu__host__name", "gpu__index", "utilisation_percent", "memory_used_mb"
    ):
        latest.setdefault(gpu_id, FreshSample(host_name, index, utilisation, memory))
    return sorted(latest.values(), key=lambda sample: (sample.host_name, sample.index))


def gpu_table(*, now: datetime) -> GpuTable:
    """Every active GPU with its latest fresh sample and the reservation holding it now."""
    gpus = list(Gpu.objects.filter(is_active=True).select_related("host").order_by("host__name", "index"))
    samples: dict[int, GpuSample] = {}
    for sample in _latest_fresh_samples(now=now):
        samples.setdefault(sample.gpu_id, sample)
    holders = {
        allocation.gpu_id: allocation.reservation
        for allocation in GpuAllocation.objects.filter(
            gpu__in=gpus,
            active=True,
            start__lte=now,
            end__gt=now,
            reservation__status__in=Reservation.LIVE_STATUSES,
        ).select_related("reservation__user")
    }
    idle_ids = set(
        ReservationGpuStatus.objects.filter(
            reservation_id__in=[holder.pk for holder in holders.values()], idle_flagged_at__isnull=False
        ).values_list("reservation_id", flat=True)
    )
    rows = []
    for gpu in gpus:
        sample = samples.get(gpu.pk)
        holder = holders.get(gpu.pk)
        rows.append(
            GpuTableRow(
                host_name=gpu.host.name,
                index=gpu.index,
                name=gpu.name,
                memory_total_mb=gpu.memory_mb,
                memory_used_mb=sample.memory_used_mb if sample else None,
                utilisation_percent=sample.utilisation_percent if sample else None,
                process_count=sample.process_count if sample else None,
                taken_at=sample.taken_at if sample else None,
                holder_username=holder.user.username if holder else "",
                reservation_id=holder.pk if holder else None,
                is_idle=bool(holder and holder.pk in idle_ids),
            )
        )
    return GpuTable(rows=tuple(rows))


class Gap(models.TextChoices):
    """Why a host's GPUs have no reading, from what its agent last recorded."""

    AGENT_OFFLINE = "agent_offline", _("its agent is offline")
    NO_DRIVER = "no_driver", _("no NVIDIA driver (NVML) answers on it")
    NO_GPUS = "no_gpus", _("it has no GPU in service")
    NO_SAMPLE = "no_sample", _("no reading yet")


@dataclass(frozen=True)
class HostGap:
    host_name: str
    reason: str
    # The agent's last heartbeat (AGENT_OFFLINE) or the newest reading (NO_SAMPLE); None: never.
    since: datetime | None

    @property
    def label(self) -> str:
        return Gap(self.reason).label


def gpu_gaps(*, now: datetime) -> list[HostGap]:
    """The hosts none of whose GPUs has a fresh reading, each with why: an agent that went
    quiet, a host whose agent found no NVIDIA driver, one without GPUs, or no sample yet
    (the sampler not running there, or the host just added)."""
    # Subqueries, not joins: a join would walk every sample kept (a month of minutes).
    readings = GpuSample.objects.filter(gpu__host=OuterRef("pk"), gpu__is_active=True)
    hosts = (
        Host.objects.select_related("agent")
        .order_by("name")
        .annotate(
            gpus_in_service=Count("gpus", filter=Q(gpus__is_active=True)),
            fresh=Exists(readings.filter(taken_at__gt=now - FRESH_FOR)),
            last_reading=Subquery(readings.order_by("-taken_at").values("taken_at")[:1]),
        )
    )
    gaps = []
    for host in hosts:
        if host.fresh:
            continue
        agent = getattr(host, "agent", None) if host.served_by_agent else None
        if host.served_by_agent and agent_health(agent=agent, now=now) == Health.OFFLINE:
            gaps.append(HostGap(host.name, Gap.AGENT_OFFLINE, agent.last_seen_at if agent else None))
        elif agent is not None and agent.last_seen_at is not None and not agent.nvml_driver:
            gaps.append(HostGap(host.name, Gap.NO_DRIVER, None))
        elif not host.gpus_in_service:
            gaps.append(HostGap(host.name, Gap.NO_GPUS, None))
        else:
            gaps.append(HostGap(host.name, Gap.NO_SAMPLE, host.last_reading))
    return gaps


def gpu_hours_busy_by_user_and_kind(start: datetime, end: datetime) -> dict[tuple[int, str], float]:
    """(user id, reservation kind) -> GPU-hours busy, counted as `gpu_hours_busy_by_user`
    counts them: the usage CSV has a row per user and kind."""
    return {
        (user_id, kind): hours
        for (user_id, kind), hours in _busy_hours(start, end, "user_id", "kind").items()
    }


def gpu_hours_busy_by_user(start: datetime, end: datetime) -> dict[int, float]:
    """User id -> GPU-hours that the user's reservations starting in [start, end) kept busy:
    sampled GPU-minutes at or above GPU_IDLE_UTILISATION_PERCENT while the reservation held
    the GPU, all of them, as the usage report counts a reservation's other hours in the
    range it starts in (a booking over a month's end is not split). Only as far back as the
    samples are kept (GPU_SAMPLE_RETENTION_DAYS)."""
    return {user_id: hours for (user_id,), hours in _busy_hours(start, end, "user_id").items()}


def _busy_hours(start: datetime, end: datetime, *fields: str) -> dict[tuple, float]:
    """GPU-hours busy of the reservations starting in [start, end), grouped by these
    reservation fields."""
    reservation = "gpu__allocations__reservation"
    rows = (
        _samples_in_allocations(reservation__start__gte=start, reservation__start__lt=end)
        .filter(
            # Implied by the above; it lets the database start its read of the samples'
            # (gpu, taken_at) index at the range's start.
            taken_at__gte=start,
            utilisation_percent__gte=settings.GPU_IDLE_UTILISATION_PERCENT,
        )
        .values_list(*(f"{reservation}__{name}" for name in fields))
        .annotate(samples=Count("id"))
        .order_by()
    )
    hours_per_sample = SAMPLE_INTERVAL / timedelta(hours=1)
    return {tuple(row[:-1]): row[-1] * hours_per_sample for row in rows}


# Busy samples per owner and week of the allocations in {allocations}. On PostgreSQL each
# allocation is spread over the hours it touches, so the samples join it on (GPU, hour) by
# hash: a sample meets the one or two holds of its GPU in its hour, not every hold of the
# year.
_BUSY_BY_GPU_HOUR = (
    "SELECT a.owner, a.week, COUNT(*) FROM ({allocations}) a "
    "CROSS JOIN LATERAL generate_series(date_trunc('hour', a.start), "
    "a.\"end\" - interval '1 microsecond', interval '1 hour') AS h(hour) "
    "JOIN containers_gpusample s ON s.gpu_id = a.gpu_id AND date_trunc('hour', s.taken_at) = h.hour "
    'AND s.taken_at >= a.start AND s.taken_at < a."end" '
    "WHERE s.utilisation_percent >= %s AND s.taken_at >= %s GROUP BY a.owner, a.week"
)
_BUSY_BY_GPU = (
    "SELECT a.owner, a.week, COUNT(*) FROM ({allocations}) a "
    "JOIN containers_gpusample s ON s.gpu_id = a.gpu_id "
    'AND s.taken_at >= a.start AND s.taken_at < a."end" '
    "WHERE s.utilisation_percent >= %s GROUP BY a.owner, a.week"
)


def gpu_hours_busy_by_user_week(usage_filter: UsageFilter) -> dict[tuple[int, date], float]:
    """(user id, week of the reservation's start) -> GPU-hours busy, counted as
    `gpu_hours_busy_by_user` counts them, for the reservations the usage page shows.

    Summed by the database. Joining samples to allocations by GPU alone compares every
    sample with every hold of its GPU (seconds over a year), and a count per allocation
    through an index reads the samples again for each of thousands of allocations; on
    PostgreSQL the join is on (GPU, hour) instead (see below). Allocations that ended
    before the oldest sample kept are left out before any sample is read."""
    oldest = GpuSample.objects.order_by("taken_at").values_list("taken_at", flat=True).first()
    if oldest is None:
        return {}
    allocations = (
        GpuAllocation.objects.filter(
            usage_filter.reservation_q("reservation"), active=True, end__gt=max(oldest, usage_filter.start)
        )
        .values(
            "gpu_id",
            "start",
            "end",
            owner=F("reservation__user_id"),
            week=TruncWeek("reservation__start", tzinfo=timezone.get_current_timezone()),
        )
        .order_by()
    )  # not the allocations' own order, by GPU index, which joins the GPUs
    inner, params = allocations.query.sql_with_params()
    busy_at_least = settings.GPU_IDLE_UTILISATION_PERCENT
    if connection.vendor == "postgresql":
        sql = _BUSY_BY_GPU_HOUR.replace("{allocations}", inner)
        args = [*params, busy_at_least, max(oldest, usage_filter.start)]
    else:  # SQLite, a first-run lab's database: the plain join
        sql = _BUSY_BY_GPU.replace("{allocations}", inner)
        args = [*params, busy_at_least]
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    hours_per_sample = SAMPLE_INTERVAL / timedelta(hours=1)
    return {
        (owner, _week_start(week)): int(samples) * hours_per_sample
        for owner, week, samples in rows
        if samples
    }


def _week_start(week: datetime | str) -> date:
    """A week as the raw cursor gives it: a datetime (PostgreSQL), text (SQLite)."""
    if isinstance(week, str):
        return datetime.fromisoformat(week).date()
    return week_of(week)
