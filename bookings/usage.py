"""Reads behind the usage page: hours per user and week, GPU occupancy, job waits, the
top users. Every figure is summed by the database (grouped by user, week, GPU, bucket);
Python only shapes the few hundred grouped rows. A reservation's hours come from
`reservation_figures`, the one definition the CSV reports use too, and, as there, a
reservation belongs to the week (and range) its start falls in.

GPU-hours the telemetry saw busy live a layer up (containers/telemetry/selectors.py);
the view passes them in.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db import connection
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncWeek
from django.utils import timezone

from accounts.models import CapabilityProfile
from bookings.models import GpuAllocation, Reservation
from bookings.report_figures import reservation_figures
from containers.models import Gpu

# The heatmap has a column per day up to this many days, a column per week beyond.
DAILY_COLUMNS_UP_TO = 62
TOP_USERS = 10


@dataclass(frozen=True)
class UsageFilter:
    """What the page and its CSVs show: days `first` to `last` (both included, in
    TIME_ZONE), optionally one host, one capability profile, one user."""

    first: date
    last: date
    host_id: int | None = None
    profile_id: int | None = None
    user_id: int | None = None

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.first, time.min))

    @property
    def end(self) -> datetime:
        """Exclusive: midnight after the last day."""
        return timezone.make_aware(datetime.combine(self.last + timedelta(days=1), time.min))

    def user_q(self, prefix: str) -> Q:
        """The user and profile conditions, for a relation path ending at a user."""
        q = Q()
        if self.user_id is not None:
            q &= Q(**{f"{prefix}_id": self.user_id})
        if self.profile_id is not None:
            profile = Q(**{f"{prefix}__capability_profile_id": self.profile_id})
            if CapabilityProfile.objects.filter(pk=self.profile_id, is_default=True).exists():
                # Users with no profile are on the default one.
                profile |= Q(**{f"{prefix}__capability_profile__isnull": True})
            q &= profile
        return q

    def reservation_q(self, prefix: str = "") -> Q:
        """Reservations starting in the range, on the host, of the users chosen."""
        path = f"{prefix}__" if prefix else ""
        q = Q(**{f"{path}start__gte": self.start, f"{path}start__lt": self.end})
        if self.host_id is not None:
            q &= Q(**{f"{path}host_id": self.host_id})
        return q & self.user_q(f"{path}user")


def _hours(value: float | None) -> float:
    """Hours to the microsecond: SQLite's julianday arithmetic leaves a few 1e-9 of noise."""
    return round(value or 0.0, 6)


def week_of(moment: datetime) -> date:
    """The local date of a truncated week (a datetime from TruncWeek)."""
    return timezone.localtime(moment).date() if timezone.is_aware(moment) else moment.date()


def _local_week() -> TruncWeek:
    return TruncWeek("start", tzinfo=timezone.get_current_timezone())


def reservations_for(usage_filter: UsageFilter, *, now: datetime) -> QuerySet[Reservation]:
    return Reservation.objects.filter(usage_filter.reservation_q()).annotate(**reservation_figures(now=now))


def _held() -> F:
    return F("hours_booked") - F("hours_given_back")


@dataclass(frozen=True)
class WeekHours:
    """One user's week: GPU-hours held (booked, less what was given back), run (a
    container ran) and busy (telemetry saw the GPUs working); `busy` is filled in by the
    caller. Hours are wall-clock hours of the reservations, GPU-hours times their GPUs."""

    user_id: int
    username: str
    week: date
    hours_held: float
    hours_run: float
    gpu_hours_held: float
    gpu_hours_run: float
    gpu_hours_busy: float = 0.0


def weekly_hours(
    usage_filter: UsageFilter, *, now: datetime, busy: dict[tuple[int, date], float] | None = None
) -> list[WeekHours]:
    """Per user and week (Monday, TIME_ZONE) of the reservations' starts, by week then name.
    `busy` maps (user id, week) to GPU-hours busy."""
    busy = busy or {}
    held = _held()
    rows = (
        reservations_for(usage_filter, now=now)
        .annotate(week=_local_week())
        .values("user_id", "user__username", "week")
        .annotate(
            held=Sum(held),
            run=Sum("hours_run"),
            gpu_held=Sum(held * F("gpu_count")),
            gpu_run=Sum(F("hours_run") * F("gpu_count")),
        )
        .order_by("week", "user__username")
    )
    return [
        WeekHours(
            user_id=row["user_id"],
            username=row["user__username"],
            week=(week := week_of(row["week"])),
            hours_held=_hours(row["held"]),
            hours_run=_hours(row["run"]),
            gpu_hours_held=_hours(row["gpu_held"]),
            gpu_hours_run=_hours(row["gpu_run"]),
            gpu_hours_busy=busy.get((row["user_id"], week), 0.0),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class WeekTotal:
    week: date
    gpu_hours_held: float
    gpu_hours_run: float
    gpu_hours_busy: float


def weekly_totals(weeks: Iterable[WeekHours]) -> list[WeekTotal]:
    """The users' weeks added up per week, for the chart (the CSV keeps them per user)."""
    totals: dict[date, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for row in weeks:
        total = totals[row.week]
        total[0] += row.gpu_hours_held
        total[1] += row.gpu_hours_run
        total[2] += row.gpu_hours_busy
    return [WeekTotal(week, *figures) for week, figures in sorted(totals.items())]


@dataclass(frozen=True)
class TopUser:
    user_id: int
    username: str
    gpu_hours_run: float
    gpu_hours_held: float
    reservations: int


def top_users(usage_filter: UsageFilter, *, now: datetime, limit: int = TOP_USERS) -> list[TopUser]:
    """The users with the most GPU-hours run, most first (ties by name)."""
    held = _held()
    rows = (
        reservations_for(usage_filter, now=now)
        .values("user_id", "user__username")
        .annotate(
            gpu_run=Coalesce(Sum(F("hours_run") * F("gpu_count")), 0.0),
            gpu_held=Coalesce(Sum(held * F("gpu_count")), 0.0),
            count=Count("pk"),
        )
        .filter(gpu_held__gt=0)
        .order_by("-gpu_run", "-gpu_held", "user__username")[:limit]
    )
    return [
        TopUser(
            user_id=row["user_id"],
            username=row["user__username"],
            gpu_hours_run=_hours(row["gpu_run"]),
            gpu_hours_held=_hours(row["gpu_held"]),
            reservations=row["count"],
        )
        for row in rows
    ]


# GPU occupancy -----------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start) / timedelta(hours=1)


def occupancy_buckets(usage_filter: UsageFilter) -> list[Bucket]:
    """Days of the range, or weeks from its first day when it is longer than
    DAILY_COLUMNS_UP_TO days (the last one cut at the range's end)."""
    days = (usage_filter.last - usage_filter.first).days + 1
    step = 1 if days <= DAILY_COLUMNS_UP_TO else 7
    buckets = []
    for offset in range(0, days, step):
        first = usage_filter.first + timedelta(days=offset)
        last = min(first + timedelta(days=step), usage_filter.last + timedelta(days=1))
        buckets.append(
            Bucket(
                timezone.make_aware(datetime.combine(first, time.min)),
                timezone.make_aware(datetime.combine(last, time.min)),
            )
        )
    return buckets


@dataclass(frozen=True)
class GpuRow:
    gpu_id: int
    host_name: str
    index: int
    hours: tuple[float, ...]  # held in each bucket

    @property
    def label(self) -> str:
        return f"{self.host_name} GPU {self.index}"


@dataclass(frozen=True)
class Occupancy:
    buckets: list[Bucket]
    rows: list[GpuRow] = field(default_factory=list)

    def share(self, row: GpuRow, column: int) -> float:
        return row.hours[column] / self.buckets[column].hours


def _hours_sql(later: str, earlier: str) -> str:
    if connection.vendor == "postgresql":
        return f"(EXTRACT(EPOCH FROM ({later} - {earlier}))::float8 / 3600)"
    return f"((julianday({later}) - julianday({earlier})) * 24.0)"


def _held_hours(usage_filter: UsageFilter, *, gpus: list[Gpu], buckets: list[Bucket]) -> list[tuple]:
    """(gpu id, bucket number, hours held) for each pair that has any."""
    allocations = GpuAllocation.objects.filter(
        usage_filter.user_q("reservation__user"),
        active=True,
        start__lt=usage_filter.end,
        end__gt=usage_filter.start,
        gpu__in=[gpu.pk for gpu in gpus],
    ).values("gpu_id", "start", "end")
    inner, inner_params = allocations.query.sql_with_params()
    cast = "::timestamptz" if connection.vendor == "postgresql" else ""
    values = ", ".join(f"(%s, %s{cast}, %s{cast})" for _ in buckets)
    adapt = connection.ops.adapt_datetimefield_value
    bucket_params = [value for n, b in enumerate(buckets) for value in (n, adapt(b.start), adapt(b.end))]
    later = 'CASE WHEN a."end" < b.column3 THEN a."end" ELSE b.column3 END'
    earlier = "CASE WHEN a.start > b.column2 THEN a.start ELSE b.column2 END"
    # Only our own fragments and the ORM's SQL are joined; every value is a parameter.
    sql = (
        f"SELECT a.gpu_id, b.column1, SUM({_hours_sql(later, earlier)}) "  # noqa: S608
        f"FROM ({inner}) a JOIN (VALUES {values}) b "
        'ON a.start < b.column3 AND a."end" > b.column2 GROUP BY a.gpu_id, b.column1'
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*inner_params, *bucket_params])
        return cursor.fetchall()


def gpu_occupancy(usage_filter: UsageFilter) -> Occupancy:
    """Hours each GPU was held (active allocations) in each bucket: the allocations cut to
    each bucket they overlap and summed, in one grouped query. The host filter picks the
    GPUs; the user and profile filters, whose holds count. Unlike the hours per week, an
    allocation counts where it falls in time, not where its reservation starts."""
    buckets = occupancy_buckets(usage_filter)
    gpus = Gpu.objects.filter(is_active=True).select_related("host").order_by("host__name", "index")
    if usage_filter.host_id is not None:
        gpus = gpus.filter(host_id=usage_filter.host_id)
    gpus = list(gpus)
    held: dict[int, list[float]] = {gpu.pk: [0.0] * len(buckets) for gpu in gpus}
    if gpus and buckets:
        for gpu_id, column, hours in _held_hours(usage_filter, gpus=gpus, buckets=buckets):
            held[gpu_id][int(column)] = _hours(hours)
    rows = [GpuRow(gpu.pk, gpu.host.name, gpu.index, tuple(held[gpu.pk])) for gpu in gpus]
    return Occupancy(buckets=buckets, rows=rows)
