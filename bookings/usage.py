"""Reads behind the usage page: hours per user and week, GPU occupancy, job waits, the
top users. Every figure is summed by the database (grouped by user, week, GPU, bucket);
Python only shapes the few hundred grouped rows. A reservation's hours come from
`reservation_figures`, the one definition the CSV reports use too, and, as there, a
reservation belongs to the week (and range) its start falls in.

GPU-hours the telemetry saw busy live a layer up (containers/telemetry/selectors.py);
the view passes them in.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db import connection, transaction
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncWeek
from django.utils import timezone

from accounts.models import CapabilityProfile, User
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


@contextmanager
def analytic_reads() -> Iterator[None]:
    """The usage page's reads in one transaction with PostgreSQL's JIT off: their plans
    are estimated far above what they cost (generate_series counts 1,000 rows a call), and
    compiling them took longer than running them (1.3 s of a 1.8 s query over a year)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield


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
    reservations: int = 0


def weekly_hours(
    usage_filter: UsageFilter, *, now: datetime, busy: dict[tuple[int, date], float] | None = None
) -> list[WeekHours]:
    """Per user and week (Monday, TIME_ZONE) of the reservations' starts, by week then name.
    `busy` maps (user id, week) to GPU-hours busy. Grouped by user id and week alone, in
    no order (a narrow hash aggregate; sorting the wide rows by name spilled to disk), the
    names read apart and the few hundred groups sorted here."""
    busy = busy or {}
    held = _held()
    rows = list(
        reservations_for(usage_filter, now=now)
        .annotate(week=_local_week())
        .values("user_id", "week")
        .annotate(
            held=Sum(held),
            run=Sum("hours_run"),
            gpu_held=Sum(held * F("gpu_count")),
            gpu_run=Sum(F("hours_run") * F("gpu_count")),
            count=Count("pk"),
        )
        .order_by()
    )
    names = dict(User.objects.filter(pk__in={row["user_id"] for row in rows}).values_list("pk", "username"))
    for row in rows:
        row["week"] = week_of(row["week"])
    rows.sort(key=lambda row: (row["week"], names[row["user_id"]]))
    return [
        WeekHours(
            user_id=row["user_id"],
            username=names[row["user_id"]],
            week=(week := row["week"]),
            hours_held=_hours(row["held"]),
            hours_run=_hours(row["run"]),
            gpu_hours_held=_hours(row["gpu_held"]),
            gpu_hours_run=_hours(row["gpu_run"]),
            gpu_hours_busy=busy.get((row["user_id"], week), 0.0),
            reservations=row["count"],
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


def top_users(weeks: Iterable[WeekHours], *, limit: int = TOP_USERS) -> list[TopUser]:
    """The users with the most GPU-hours run, most first (ties: more held, then by name),
    added up from their weeks (`weekly_hours`), so the reservations are read once."""
    totals: dict[int, list] = {}
    for week in weeks:
        total = totals.setdefault(week.user_id, [week.username, 0.0, 0.0, 0])
        total[1] += week.gpu_hours_run
        total[2] += week.gpu_hours_held
        total[3] += week.reservations
    ranked = sorted(
        (
            TopUser(user_id, name, _hours(run), _hours(held), count)
            for user_id, (name, run, held, count) in totals.items()
        ),
        key=lambda user: (-user.gpu_hours_run, -user.gpu_hours_held, user.username),
    )
    return [user for user in ranked if user.gpu_hours_held > 0][:limit]


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
    """(gpu id, bucket number, hours held) for each pair that has any: each allocation cut
    to every bucket it overlaps, summed by the database."""
    allocations = (
        GpuAllocation.objects.filter(
            usage_filter.user_q("reservation__user"),
            active=True,
            start__lt=usage_filter.end,
            end__gt=usage_filter.start,
            gpu__in=[gpu.pk for gpu in gpus],
        )
        .values("gpu_id", "start", "end")
        .order_by()  # not the allocations' own order, by GPU index, which joins the GPUs
    )
    inner, inner_params = allocations.query.sql_with_params()
    is_postgresql = connection.vendor == "postgresql"
    cast = "::timestamptz" if is_postgresql else ""
    values = ", ".join(f"(%s, %s{cast}, %s{cast})" for _ in buckets)
    adapt = connection.ops.adapt_datetimefield_value
    bucket_params = [value for n, b in enumerate(buckets) for value in (n, adapt(b.start), adapt(b.end))]
    later = 'CASE WHEN a."end" < b.column3 THEN a."end" ELSE b.column3 END'
    earlier = "CASE WHEN a.start > b.column2 THEN a.start ELSE b.column2 END"
    hours = f"SUM({_hours_sql(later, earlier)})"
    if is_postgresql:
        # Each allocation meets only the buckets it falls in: their numbers follow from its
        # local wall-clock times (buckets start at local midnights, a whole number of days
        # apart), so the buckets join by number, by hash, instead of every allocation being
        # compared with every bucket.
        step = (buckets[1].start - buckets[0].start) if len(buckets) > 1 else timedelta(days=1)
        days = 7 if step > timedelta(days=2) else 1
        zone = timezone.get_current_timezone_name().replace("'", "''")
        first = (datetime.combine(usage_filter.first, time.min) - datetime(1970, 1, 1)).total_seconds()

        def number(moment: str) -> str:
            wall = f"EXTRACT(EPOCH FROM ({moment}) AT TIME ZONE '{zone}')"
            return f"floor(({wall} - {first:.0f}) / {days * 86400})::int"

        last_moment = "a.\"end\" - interval '1 microsecond'"
        sql = (
            f"SELECT a.gpu_id, b.column1, {hours} FROM ({inner}) a "  # noqa: S608
            f"CROSS JOIN LATERAL generate_series(GREATEST({number('a.start')}, 0), "
            f"LEAST({number(last_moment)}, {len(buckets) - 1})) AS n(i) "
            f"JOIN (VALUES {values}) b ON b.column1 = n.i GROUP BY a.gpu_id, b.column1"
        )
    else:
        sql = (
            f"SELECT a.gpu_id, b.column1, {hours} FROM ({inner}) a "  # noqa: S608
            f'JOIN (VALUES {values}) b ON a.start < b.column3 AND a."end" > b.column2 '
            "GROUP BY a.gpu_id, b.column1"
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
