"""The figures of a reservation in the usage reports, written once as database expressions.

Every report reads them from here: the reservations CSV (streamed by PostgreSQL itself
through COPY, or row by row on SQLite), and the usage CSV, which sums them per user in
the database. A reservation's figures are the whole reservation's:
- hours booked: the start to the end as booked (or extended); a booking made for now
  counts from the moment it was made (`charged_from`), not from the slot's start;
- hours run: started_at to ended_at, or to now (at most the end) while it runs;
- hours given back: all of a cancelled booking; from the release (or the start, if
  released before it) to the booked end of one released early;
- how it ended (`end_reason`), each counted apart: cancelled or released early by its
  owner, cancelled or stopped by a maintainer (a stop, a drain), released idle by the
  portal, finished (a job's own end: its command exited or reached its time limit; a
  job its owner cancels is released early).
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
# How a reservation ended, as the reports write it.
CANCELLED = "cancelled"
RELEASED_EARLY = "released early"
CANCELLED_BY_MAINTAINER = "cancelled by maintainer"
STOPPED_BY_MAINTAINER = "stopped by maintainer"
RELEASED_IDLE = "released idle"
FINISHED = "finished"
BY_MAINTAINER = (CANCELLED_BY_MAINTAINER, STOPPED_BY_MAINTAINER)


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
    `hours_given_back` (doubles) and `end_reason` (one of the reasons above, or "" while it
    has not ended or when it ran its window)."""
    booked_end = Coalesce(F("booked_end"), F("end"))
    charged_start = Coalesce(F("charged_from"), F("start"))
    hours_booked = HoursBetween(booked_end, charged_start)
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
    maintainer = Q(ended_by=Reservation.EndedBy.MAINTAINER)
    return {
        "hours_booked": hours_booked,
        "hours_run": _not_below_zero(HoursBetween(run_end, F("started_at"))),
        "hours_given_back": Case(
            When(cancelled, then=hours_booked),
            When(
                released,
                then=_not_below_zero(HoursBetween(booked_end, Greatest(F("released_at"), charged_start))),
            ),
            default=Value(0.0),
            output_field=FloatField(),
        ),
        "end_reason": Case(
            When(ended_by=Reservation.EndedBy.JOB, then=Value(FINISHED)),
            When(cancelled & maintainer, then=Value(CANCELLED_BY_MAINTAINER)),
            When(cancelled, then=Value(CANCELLED)),
            When(released & maintainer, then=Value(STOPPED_BY_MAINTAINER)),
            When(released & Q(ended_by=Reservation.EndedBy.SYSTEM), then=Value(RELEASED_IDLE)),
            When(released, then=Value(RELEASED_EARLY)),
            default=Value(""),
            output_field=CharField(),
        ),
    }
