"""The figures of a reservation in the usage reports, written once as database expressions.

Every report reads them from here: the reservations CSV (streamed by PostgreSQL itself
through COPY, or row by row on SQLite), and the usage CSV, which sums them per user in
the database. A reservation's figures are the whole reservation's:
- hours booked: the start to the end as booked (or extended);
- hours run: started_at to ended_at, or to now (at most the end) while it runs;
- hours given back: all of a cancelled booking; from the release (or the start, if
  released before it) to the booked end of one released early.
"""

from datetime import datetime

from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    Expression,
    F,
    FloatField,
    Func,
    Q,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Least

from bookings.models import Reservation

RUNNING_STATUSES = (Reservation.Status.STARTING, Reservation.Status.RUNNING)
UNSUCCESSFUL_STATUSES = (Reservation.Status.BLOCKED, Reservation.Status.FAILED)
CANCELLED = "cancelled"
RELEASED_EARLY = "released early"


class HoursBetween(Func):
    """(later - earlier) in hours, a double; NULL when either is NULL."""

    arity = 2
    output_field = FloatField()

    def as_sql(self, compiler, connection, **extra):
        # PostgreSQL: the interval's exact seconds, as a double like Python's float.
        return super().as_sql(
            compiler,
            connection,
            template="(EXTRACT(EPOCH FROM (%(expressions)s))::float8 / 3600)",
            arg_joiner=" - ",
            **extra,
        )

    def as_sqlite(self, compiler, connection, **extra):
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 24.0)",
            arg_joiner=") - julianday(",
            **extra,
        )


def _not_below_zero(hours: Expression) -> Expression:
    # Coalesce first: SQLite's two-argument MAX is NULL when either side is.
    return Greatest(Coalesce(hours, Value(0.0)), Value(0.0))


def reservation_figures(*, now: datetime) -> dict[str, Expression]:
    """Annotations for a Reservation queryset: `hours_booked`, `hours_run`,
    `hours_given_back` (doubles) and `given_back_by` ("cancelled", "released early" or "")."""
    booked_end = Coalesce(F("booked_end"), F("end"))
    hours_booked = HoursBetween(booked_end, F("start"))
    run_end = Coalesce(
        F("ended_at"),
        Case(
            When(status__in=RUNNING_STATUSES, then=Least(Value(now, output_field=DateTimeField()), F("end"))),
            default=None,
            output_field=DateTimeField(),
        ),
    )
    cancelled = Q(status=Reservation.Status.CANCELLED) | Q(cancelled_at__isnull=False)
    released = Q(released_at__isnull=False)
    return {
        "hours_booked": hours_booked,
        "hours_run": _not_below_zero(HoursBetween(run_end, F("started_at"))),
        "hours_given_back": Case(
            When(cancelled, then=hours_booked),
            When(
                released,
                then=_not_below_zero(HoursBetween(booked_end, Greatest(F("released_at"), F("start")))),
            ),
            default=Value(0.0),
            output_field=FloatField(),
        ),
        "given_back_by": Case(
            When(cancelled, then=Value(CANCELLED)),
            When(released, then=Value(RELEASED_EARLY)),
            default=Value(""),
            output_field=CharField(),
        ),
    }
