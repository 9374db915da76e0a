"""Usage limits across bookings and jobs: what one user may hold at any instant (caps at
once), the GPU-hours of any 7-day window (the rolling budget), and the longest continuous
hold on a GPU. Per-request maxima stay `accounts.selectors.capability_for`.

`limits_for` / `limits_for_users` are the one place a user's effective limits are computed
(their profile, else the default profile, else none; the hold from the lab's setting).
Each rule is one function below, written over plain rows (`Held`) so that the booking
services (which refuse) and the job scheduler (whose jobs wait) ask the same question: the
booking services through `check_usage`, one query over the user's own reservations around
the window; the scheduler over rows it reads once per pass."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.grant_selectors import grants_by_user, raised_usage_limits
from accounts.models import CapabilityProfile, User
from accounts.selectors import profile_ids_for
from bookings.models import Reservation
from bookings.timeslots import SLOT

WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Reservations that count: live ones hold capacity (caps and budget); ended ones were held
# until their end, which a release or a job's end moved to when it stopped (budget and the
# continuous hold). Cancelled and failed ones held nothing a user could use.
COUNTED_STATUSES = (*Reservation.LIVE_STATUSES, Reservation.Status.ENDED)


@dataclass(frozen=True)
class Limits:
    """A user's effective usage limits; None: no limit."""

    gpus_at_once: int | None = None
    cpus_at_once: Decimal | None = None
    memory_gb_at_once: int | None = None
    gpu_hours_per_week: Decimal | None = None
    continuous_gpu_hold: timedelta | None = None

    @property
    def has_caps(self) -> bool:
        return any(cap is not None for cap in (self.gpus_at_once, self.cpus_at_once, self.memory_gb_at_once))

    def apply_to(self, *, gpu_count: int) -> bool:
        """Whether any rule here can refuse a request with this many GPUs."""
        if self.has_caps:
            return True
        return gpu_count > 0 and (self.gpu_hours_per_week is not None or self.continuous_gpu_hold is not None)

    @property
    def reach(self) -> timedelta:
        """How far around a window the rules look at a user's other reservations."""
        return max(WEEK, self.continuous_gpu_hold or timedelta(0))


def continuous_hold_setting() -> timedelta | None:
    hours = settings.MAX_CONTINUOUS_GPU_HOLD_HOURS
    return timedelta(hours=hours) if hours else None


def limits_for(*, user: User, now: datetime) -> Limits:
    """The user's effective usage limits at `now`."""
    return limits_for_users(users=[user], now=now)[user.pk]


def limits_for_users(*, users: Iterable[User], now: datetime) -> dict[int, Limits]:
    """`limits_for` of many users from one read of the profiles (the scheduler's pass).
    On a profile a null limit inherits the default profile's; null there: no limit."""
    users = list(users)
    # A profile granted for now stands in for the user's own; a granted budget or cap
    # raises the profile's (accounts.grant_selectors).
    grants = grants_by_user(user_ids=[user.pk for user in users], now=now)
    profile_ids = profile_ids_for(users=users, now=now, grants=grants)
    wanted = {profile_id for profile_id in profile_ids.values() if profile_id}
    profiles = {p.pk: p for p in CapabilityProfile.objects.filter(Q(is_default=True) | Q(pk__in=wanted))}
    default = next((p for p in profiles.values() if p.is_default), None)
    hold = continuous_hold_setting()
    result = {}
    for user in users:
        own = profiles.get(profile_ids[user.pk])
        values = {
            field: next(
                (
                    getattr(p, field)
                    for p in (own, default)
                    if p is not None and getattr(p, field) is not None
                ),
                None,
            )
            for field in CapabilityProfile.USAGE_LIMIT_FIELDS
        }
        values = raised_usage_limits(values, grants.get(user.pk, ()))
        result[user.pk] = Limits(**values, continuous_gpu_hold=hold)
    return result


# The user's reservations as plain rows -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """One reservation of a user as the rules see it: [start, end) and what it holds."""

    start: datetime
    end: datetime
    cpus: Decimal
    memory_gb: int
    gpu_count: int
    live: bool
    kind: str
    host_name: str

    def describe(self) -> str:
        what = _("your job") if self.kind == Reservation.Kind.JOB else _("your booking")
        window = f"{_local(self.start)} - {_local(self.end)}"
        return _("%(what)s on %(host)s, %(window)s: %(gpus)s GPUs, %(cpus)s CPUs, %(memory)s GiB") % {
            "what": what,
            "host": self.host_name,
            "window": window,
            "gpus": self.gpu_count,
            "cpus": _number(self.cpus),
            "memory": self.memory_gb,
        }


def _local(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M}"


def _number(value: Decimal | float) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value.normalize():f}"


_HELD_FIELDS = ("user_id", "start", "end", "cpus", "memory_gb", "gpu_count", "status", "kind", "host__name")


def holdings(
    *,
    user_ids: Collection[int],
    start: datetime,
    end: datetime,
) -> dict[int, list[Held]]:
    """Each user's counted reservations that touch [start, end), in one query."""
    rows = Reservation.objects.filter(status__in=COUNTED_STATUSES, start__lte=end, end__gte=start)
    rows = (
        rows.filter(user_id=next(iter(user_ids))) if len(user_ids) == 1 else rows.filter(user_id__in=user_ids)
    )
    held: dict[int, list[Held]] = {user_id: [] for user_id in user_ids}
    live = set(Reservation.LIVE_STATUSES)
    for user_id, r_start, r_end, cpus, memory_gb, gpus, status, kind, host_name in rows.values_list(
        *_HELD_FIELDS
    ):
        held[user_id].append(Held(r_start, r_end, cpus, memory_gb, gpus, status in live, kind, host_name))
    return held


# Caps at once --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapBreach:
    code: str  # the cap's field name: gpus_at_once, cpus_at_once, memory_gb_at_once
    cap: Decimal | int
    held: Decimal | int
    at: datetime
    rows: list[Held]
    until: datetime  # when what the user holds at `at` first drops

    @property
    def label(self) -> str:
        return CAP_LABELS[self.code]()


CAP_LABELS = {
    "gpus_at_once": lambda: _("your GPUs at once"),
    "cpus_at_once": lambda: _("your CPUs at once"),
    "memory_gb_at_once": lambda: _("your memory at once"),
}


def cap_breach(
    *,
    limits: Limits,
    held: Iterable[Held],
    start: datetime,
    end: datetime,
    cpus: Decimal,
    memory_gb: int,
    gpu_count: int,
) -> CapBreach | None:
    """The first cap that a request for [start, end) breaks at some instant, with what the
    user holds then; None when every cap holds. Only live reservations hold capacity."""
    if not limits.has_caps:
        return None
    live = [h for h in held if h.live and h.start < end and h.end > start]
    wants = (
        ("gpus_at_once", limits.gpus_at_once, gpu_count),
        ("cpus_at_once", limits.cpus_at_once, cpus),
        ("memory_gb_at_once", limits.memory_gb_at_once, memory_gb),
    )
    # Usage only rises where a reservation starts, so those instants (and the window's
    # start) are the only ones to look at.
    instants = sorted({start, *(h.start for h in live if h.start > start)})
    for code, cap, wanted in wants:
        if cap is None or not wanted:
            continue
        for instant in instants:
            covering = [h for h in live if h.start <= instant < h.end]
            amount = sum((_amount(h, code) for h in covering), 0)
            if amount + wanted > cap:
                until = min(h.end for h in covering) if covering else end
                return CapBreach(code, cap, amount, instant, covering, until)
    return None


def _amount(held: Held, code: str) -> Decimal | int:
    if code == "gpus_at_once":
        return held.gpu_count
    return held.cpus if code == "cpus_at_once" else held.memory_gb


def check_caps(
    *,
    limits: Limits,
    held: Iterable[Held],
    start: datetime,
    end: datetime,
    cpus: Decimal,
    memory_gb: int,
    gpu_count: int,
) -> None:
    """A request that would make the user hold more than a cap at any instant of its
    window is refused, naming the cap and what the user holds then."""
    breach = cap_breach(
        limits=limits, held=held, start=start, end=end, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count
    )
    if breach is None:
        return
    raise ValidationError(
        _(
            "Over %(cap_name)s: your profile allows %(cap)s at once, and at %(at)s you already hold "
            "%(held)s (%(rows)s)."
        )
        % {
            "cap_name": breach.label,
            "cap": _number(Decimal(breach.cap)),
            "at": _local(breach.at),
            "held": _number(Decimal(breach.held)),
            "rows": "; ".join(h.describe() for h in breach.rows) or _("nothing else"),
        },
        code="over_cap",
    )


# The rolling GPU-hour budget -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Span:
    start: datetime
    end: datetime
    gpus: int

    def hours_in(self, start: datetime, end: datetime) -> float:
        seconds = (min(self.end, end) - max(self.start, start)).total_seconds()
        return self.gpus * seconds / 3600 if seconds > 0 else 0.0


def _gpu_spans(held: Iterable[Held]) -> list[_Span]:
    return [_Span(h.start, h.end, h.gpu_count) for h in held if h.gpu_count]


def _worst_week(spans: list[_Span], start: datetime, end: datetime) -> tuple[float, datetime]:
    """The most GPU-hours `spans` put in any 7-day window that meets [start, end), and where
    that window starts. As the window slides, a span adds its GPUs to the slope when the
    window's end enters it and when its start leaves it, and takes them away when the
    window's end leaves it and when its start enters it; so the sum is piecewise linear
    and its maximum sits at one of those instants, found in one sweep over them."""
    lo, hi = start - WEEK, end
    events = []
    for span in spans:
        events += [(span.start - WEEK, span.gpus), (span.end - WEEK, -span.gpus)]
        events += [(span.start, -span.gpus), (span.end, span.gpus)]
    events.sort(key=lambda event: event[0])
    total = sum(span.hours_in(lo, lo + WEEK) for span in spans)
    slope = sum(delta for moment, delta in events if moment <= lo)
    best, at, here = total, lo, lo
    for moment, delta in events:
        if moment <= lo:
            continue
        if moment > hi:
            break
        total += slope * (moment - here).total_seconds() / 3600
        here = moment
        slope += delta
        if total > best + 1e-9:
            best, at = total, moment
    total += slope * (hi - here).total_seconds() / 3600
    if total > best + 1e-9:
        best, at = total, hi
    return best, at


def budget_exceeded(
    *, limits: Limits, held: Iterable[Held], start: datetime, end: datetime, gpu_count: int
) -> bool:
    """Whether a request for [start, end) puts more GPU-hours than the budget in some 7-day
    window. Bookings count as booked, jobs at their time limit until they end."""
    budget = limits.gpu_hours_per_week
    if budget is None or not gpu_count:
        return False
    spans = _gpu_spans(held)
    budget = float(budget)
    new = _Span(start, end, gpu_count)
    # Most requests are far under budget: all the hours around the window at once first.
    around = sum(span.hours_in(start - WEEK, end + WEEK) for span in spans)
    if around + new.hours_in(start, end) <= budget + 1e-9:
        return False
    worst, _at = _worst_week([*spans, new], start, end)
    return worst > budget + 1e-9


def budget_fits_from(
    *,
    limits: Limits,
    held: Iterable[Held],
    start: datetime,
    end: datetime,
    gpu_count: int,
    grid: timedelta = MINUTE,
) -> datetime | None:
    """The earliest start on `grid`, from `start` on, at which the same request fits the
    budget, or None if it never does (it alone is bigger than the budget). Between two
    instants where the request's start or end meets a span's edge (or a week off one)
    every window's sum is linear in the start, so their maximum is convex: where it fits
    at the end of such a stretch and not at its beginning, the first start that fits is
    found by halving."""
    held = list(held)
    length = end - start
    if limits.gpu_hours_per_week is None or gpu_count * length / HOUR > float(limits.gpu_hours_per_week):
        return None

    def fits(moment: datetime) -> bool:
        return not budget_exceeded(
            limits=limits, held=held, start=moment, end=moment + length, gpu_count=gpu_count
        )

    shifts = (-WEEK, timedelta(0), WEEK)
    edges = {edge + shift for span in _gpu_spans(held) for edge in (span.start, span.end) for shift in shifts}
    candidates = sorted({start, *(m for e in edges for m in (e, e - length) if m > start)})
    previous = None
    for candidate in candidates:
        if fits(candidate):
            found = candidate
            if previous is not None:
                # In whole minutes from `previous` (which does not fit) to `candidate`.
                low, high = 0, -(-(candidate - previous) // MINUTE)
                while high - low > 1:
                    middle = (low + high) // 2
                    low, high = (low, middle) if fits(previous + middle * MINUTE) else (middle, high)
                found = min(candidate, previous + high * MINUTE)
            found = _ceil(found, grid)
            if fits(found):
                return found
        previous = candidate
    return None


def _ceil(moment: datetime, grid: timedelta) -> datetime:
    return moment + (-(moment - EPOCH) % grid)


def hours_left(*, limits: Limits, held: Iterable[Held], start: datetime, end: datetime) -> float | None:
    """The budget less the GPU-hours of the fullest 7-day window meeting [start, end)."""
    if limits.gpu_hours_per_week is None:
        return None
    worst, _at = _worst_week(_gpu_spans(held), start, end)
    return max(0.0, float(limits.gpu_hours_per_week) - max(worst, 0.0))


def check_budget(
    *, limits: Limits, held: Iterable[Held], start: datetime, end: datetime, gpu_count: int
) -> None:
    """A booking that breaks the rolling budget is refused, with the hours left and when
    a request like it fits again."""
    held = list(held)
    if not budget_exceeded(limits=limits, held=held, start=start, end=end, gpu_count=gpu_count):
        return
    asked = gpu_count * (end - start) / HOUR
    left = hours_left(limits=limits, held=held, start=start, end=end)
    fits_from = budget_fits_from(
        limits=limits, held=held, start=start, end=end, gpu_count=gpu_count, grid=SLOT
    )
    values = {
        "budget": _number(limits.gpu_hours_per_week),
        "asked": f"{asked:.1f}",
        "left": f"{left:.1f}",
        "from": _local(fits_from) if fits_from else "",
    }
    if fits_from is None:
        message = _(
            "Over your GPU-hour budget: %(asked)s GPU-hours is more than your %(budget)s GPU-hours per "
            "7 days; ask for fewer GPUs or less time."
        )
    else:
        message = _(
            "Over your GPU-hour budget of %(budget)s GPU-hours per 7 days: this asks %(asked)s, and "
            "%(left)s are left in the fullest week it falls in; hours come back, and the same "
            "request fits, from %(from)s."
        )
    raise ValidationError(message % values, code="over_budget")


# The longest continuous hold -----------------------------------------------------------------


def continuous_hold(*, held: Iterable[Held], start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The stretch in which the user would hold a GPU without a break if they also held one
    in [start, end): back-to-back or overlapping bookings join into one hold. Jobs end by
    themselves at their time limit and count in the budget, so only bookings join it."""
    spans = sorted((h.start, h.end) for h in held if h.gpu_count and h.kind == Reservation.Kind.BOOKING)
    first, last = start, end
    changed = True
    while changed:
        changed = False
        for span_start, span_end in spans:
            if span_start <= last and span_end >= first and (span_start < first or span_end > last):
                first, last = min(first, span_start), max(last, span_end)
                changed = True
    return first, last


def check_continuous_hold(
    *, limits: Limits, held: Iterable[Held], start: datetime, end: datetime, gpu_count: int
) -> None:
    """Refuses a GPU booking that would make one unbroken hold longer than the lab allows."""
    longest = limits.continuous_gpu_hold
    if longest is None or not gpu_count:
        return
    first, last = continuous_hold(held=held, start=start, end=end)
    if last - first > longest:
        raise ValidationError(
            _(
                "You would hold a GPU without a break from %(first)s to %(last)s; the lab allows at most "
                "%(hours)s hours in a row (back-to-back bookings count as one). Leave a gap, or book "
                "after %(after)s."
            )
            % {
                "first": _local(first),
                "last": _local(last),
                "hours": _number(longest / HOUR),
                "after": _local(last),
            },
            code="continuous_hold",
        )


# Jobs wait instead ------------------------------------------------------------------------------


def wait_reason(
    *,
    limits: Limits,
    held: Iterable[Held],
    start: datetime,
    end: datetime,
    cpus: Decimal,
    memory_gb: int,
    gpu_count: int,
) -> tuple[str, str] | None:
    """Why a job for [start, end) must wait for its user's limits, as (the cap's field name
    or "budget", a sentence for the user), or None when it may run then."""
    held = list(held)
    cap = cap_breach(
        limits=limits, held=held, start=start, end=end, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count
    )
    if cap is not None:
        detail = _("you hold %(held)s of %(cap)s at once until %(until)s") % {
            "held": _number(Decimal(cap.held)),
            "cap": _number(Decimal(cap.cap)),
            "until": _local(cap.until),
        }
        return cap.code, detail
    if budget_exceeded(limits=limits, held=held, start=start, end=end, gpu_count=gpu_count):
        # When it fits is its planned start; the sentence keeps to what is cheap to say.
        detail = _("%(budget)s GPU-hours per 7 days; %(left)s left in the fullest week of its time limit") % {
            "budget": _number(limits.gpu_hours_per_week),
            "left": f"{hours_left(limits=limits, held=held, start=start, end=end):.1f}",
        }
        return "budget", detail
    return None


def earliest_within_limits(
    *,
    limits: Limits,
    held: Iterable[Held],
    start: datetime,
    end: datetime,
    cpus: Decimal,
    memory_gb: int,
    gpu_count: int,
) -> datetime | None:
    """The earliest start from `start` at which a job of this shape passes its user's caps
    and budget (capacity aside), or None if it never does."""
    held = list(held)
    length = end - start
    moment = start
    for _attempt in range(64):
        cap = cap_breach(
            limits=limits,
            held=held,
            start=moment,
            end=moment + length,
            cpus=cpus,
            memory_gb=memory_gb,
            gpu_count=gpu_count,
        )
        if cap is not None:
            if not cap.rows:
                return None  # the job alone is over the cap
            moment = cap.until
        elif budget_exceeded(
            limits=limits, held=held, start=moment, end=moment + length, gpu_count=gpu_count
        ):
            moment = budget_fits_from(
                limits=limits, held=held, start=moment, end=moment + length, gpu_count=gpu_count
            )
            if moment is None:
                return None
        else:
            return moment
    return None


def check_job_request(
    *, user: User, cpus: Decimal, memory_gb: int, gpu_count: int, minutes: int, now: datetime
) -> None:
    """A job that alone is over a cap at once, or whose time limit alone is over the weekly
    budget, would wait forever: refused when submitted."""
    limits = limits_for(user=user, now=now)
    start = now
    end = now + timedelta(minutes=minutes)
    check_caps(
        limits=limits, held=[], start=start, end=end, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count
    )
    check_budget(limits=limits, held=[], start=start, end=end, gpu_count=gpu_count)


# The booking services' one call ---------------------------------------------------------------


def check_usage(
    *,
    user: User,
    start: datetime,
    end: datetime,
    cpus: Decimal,
    memory_gb: int,
    gpu_count: int,
    now: datetime,
) -> None:
    """Every usage limit on a booking of [start, end) (or time added to one): caps at once,
    the budget and the continuous hold, from one read of the user's own reservations
    around the window."""
    limits = limits_for(user=user, now=now)
    if not limits.apply_to(gpu_count=gpu_count):
        return
    held = holdings(
        user_ids=[user.pk],
        start=start - limits.reach,
        end=end + limits.reach,
    )[user.pk]
    check_caps(
        limits=limits, held=held, start=start, end=end, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count
    )
    check_budget(limits=limits, held=held, start=start, end=end, gpu_count=gpu_count)
    check_continuous_hold(limits=limits, held=held, start=start, end=end, gpu_count=gpu_count)


@dataclass(frozen=True)
class Usage:
    """What a user reads as "used / budget this week", and what they hold now."""

    limits: Limits
    gpu_hours_week: float  # the 7 days up to now
    gpu_hours_ahead: float  # booked, or held by jobs at their time limit, in the next 7 days
    gpu_hours_left: float | None  # the budget less the fullest 7-day window that holds now
    gpus_now: int
    cpus_now: Decimal
    memory_gb_now: int

    @property
    def gpu_hours_budget(self) -> Decimal | None:
        return self.limits.gpu_hours_per_week


def usage_for(*, user: User, now: datetime) -> Usage:
    return usage_for_users(users=[user], now=now)[user.pk]


def usage_for_users(*, users: Iterable[User], now: datetime) -> dict[int, Usage]:
    """Each user's GPU-hours in the 7 days up to now (bookings as booked, jobs as held so
    far) and in the 7 days ahead, against the budget, and what they hold now against the
    caps: one read of the profiles, one of the reservations."""
    users = list(users)
    limits = limits_for_users(users=users, now=now)
    held = holdings(user_ids=[user.pk for user in users], start=now - WEEK, end=now + WEEK)
    result = {}
    for user in users:
        spans = _gpu_spans(held[user.pk])
        holding = [h for h in held[user.pk] if h.live and h.start <= now < h.end]
        budget = limits[user.pk].gpu_hours_per_week
        left = None
        if budget is not None:
            worst, _at = _worst_week(spans, now, now)
            left = round(max(0.0, float(budget) - max(worst, 0.0)), 1)
        result[user.pk] = Usage(
            limits=limits[user.pk],
            gpu_hours_week=round(sum(span.hours_in(now - WEEK, now) for span in spans), 1),
            gpu_hours_ahead=round(sum(span.hours_in(now, now + WEEK) for span in spans), 1),
            gpu_hours_left=left,
            gpus_now=sum(h.gpu_count for h in holding),
            cpus_now=sum((h.cpus for h in holding), Decimal(0)),
            memory_gb_now=sum(h.memory_gb for h in holding),
        )
    return result


def usage_of_active_users(*, now: datetime) -> list[tuple[User, Usage]]:
    """Every user with a reservation in the 7 days on either side of now, with their usage
    (the staff's per-user view), most GPU-hours this week first."""
    window = Reservation.objects.filter(status__in=COUNTED_STATUSES, start__lt=now + WEEK, end__gt=now - WEEK)
    users = list(
        User.objects.filter(pk__in=window.values("user_id")).only("pk", "username", "capability_profile_id")
    )
    usage = usage_for_users(users=users, now=now)
    return sorted(
        ((user, usage[user.pk]) for user in users), key=lambda row: (-row[1].gpu_hours_week, row[0].username)
    )
