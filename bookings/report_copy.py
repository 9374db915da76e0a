"""The reservations CSV written by PostgreSQL: `COPY (SELECT ...) TO STDOUT (FORMAT csv)`.

The SELECT is the ORM's, built from the same figure expressions (report_figures.py) and
the same neutralising rule (reports.WHOLE_CELL_FORMULA, INNER_FORMULA) as the row-by-row
export, and formats every cell the way that export does: local ISO 8601 times with their
offset, two decimals
like Python's `format(x, ".2f")` (PostgreSQL's to_char of a double rounds the same way),
empty cells unquoted (NULL), rows ending in CRLF like Python's csv module. The GPU
indices come from a view joined once (ReservationGpuIndices), which keeps the query free
of correlated subqueries, so PostgreSQL runs it in its parallel workers. Python then only
joins rows into pieces: the database does per row what would cost Python microseconds.
"""

from collections.abc import Iterator
from datetime import datetime

from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Expression,
    F,
    FilteredRelation,
    Func,
    Q,
    Value,
    When,
)
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from bookings.report_figures import reservation_figures
from bookings.reports import (
    INNER_FORMULA,
    INNER_FORMULA_DEFUSED,
    RESERVATION_COLUMNS,
    WHOLE_CELL_FORMULA,
    ReportRange,
    csv_bytes,
    reservations_in_range,
)

PIECE_BYTES = 256 * 1024


class LocalTime(Func):
    """A timestamp as ISO 8601 in the given time zone with that zone's offset at that
    moment ("2026-03-01T10:00:00+08:00"), as Python's isoformat(timespec="seconds") writes
    it; NULL stays NULL. The zone is written into the SQL as a quoted literal (it names a
    zone Python already knows), since the expression reads it three times."""

    arity = 1
    output_field = CharField()

    def __init__(self, expression: Expression, *, time_zone: str) -> None:
        zone = "'" + time_zone.replace("'", "''") + "'"
        local = f"(%(expressions)s AT TIME ZONE {zone})"
        offset = f"(EXTRACT(EPOCH FROM {local} - (%(expressions)s AT TIME ZONE 'UTC'))::int)"
        template = (
            f"(to_char({local}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            f"CASE WHEN {offset} < 0 THEN '-' ELSE '+' END || "
            f"to_char(abs({offset}) / 3600, 'FM00') || ':' || to_char(mod(abs({offset}), 3600) / 60, 'FM00'))"
        )
        super().__init__(expression, template=template)


class TwoDecimals(Func):
    """A double as text with two decimals, rounded like Python's `format(x, ".2f")`."""

    template = "to_char(%(expressions)s, 'FM999999999990.00')"
    output_field = CharField()


def _neutralised(text: Expression) -> Expression:
    whole_cell = Func(text, Value(WHOLE_CELL_FORMULA), template="(%(expressions)s)", arg_joiner=" ~ ")
    whole_cell.output_field = BooleanField()
    prefixed = Case(
        When(whole_cell, then=Func(Value("'"), text, template="(%(expressions)s)", arg_joiner=" || ")),
        default=text,
        output_field=CharField(),
    )
    return Func(
        prefixed,
        Value(INNER_FORMULA),
        Value(INNER_FORMULA_DEFUSED),
        Value("g"),
        function="regexp_replace",
        output_field=CharField(),
    )


def _empty_as_null(text: Expression) -> Expression:
    # PostgreSQL quotes an empty string ("") and leaves NULL empty; Python's csv writes "".
    return NullIf(text, Value(""))


def _cells(*, time_zone: str) -> dict[str, Expression]:
    """RESERVATION_COLUMNS, in order, as SQL."""

    def local(field: str) -> Expression:
        return LocalTime(F(field), time_zone=time_zone)

    return {
        "reservation_id": F("pk"),
        "kind": F("kind"),
        "user": _neutralised(F("user__username")),
        "host": _neutralised(F("host__name")),
        "start": local("start"),
        "end": local("end"),
        "booked_end": local("booked_end"),
        "charged_from": local("charged_from"),
        "status": F("status"),
        "cpus": F("cpus"),
        "memory_gb": F("memory_gb"),
        "gpu_count": F("gpu_count"),
        "gpu_indices": F("gpus_in_range__indices"),
        "image": _empty_as_null(_neutralised(Coalesce(F("image__reference"), Value("")))),
        "extra_command": _empty_as_null(_neutralised(F("extra_command"))),
        "hours_booked": TwoDecimals(F("hours_booked")),
        "gpu_hours_booked": TwoDecimals(F("hours_booked") * F("gpu_count")),
        "started_at": local("started_at"),
        "ended_at": local("ended_at"),
        "hours_run": TwoDecimals(F("hours_run")),
        "gpu_hours_run": TwoDecimals(F("hours_run") * F("gpu_count")),
        "end_reason": _empty_as_null(F("end_reason")),
        "hours_given_back": TwoDecimals(F("hours_given_back")),
    }


def copy_statement(*, report_range: ReportRange, now: datetime) -> tuple[str, tuple]:
    """The COPY statement and its parameters, bound on the client (COPY takes none)."""
    cells = _cells(time_zone=timezone.get_current_timezone_name())
    aliased = {f"csv_{name}": expression for name, expression in cells.items()}
    # The view's rows narrowed to the range in the join itself, so PostgreSQL aggregates
    # only the allocations of the range (one pass, in its parallel workers), not the whole
    # history, and not once per row as a correlated subquery would.
    in_range = Q(gpu_indices_row__start__gte=report_range.start, gpu_indices_row__start__lt=report_range.end)
    query = (
        reservations_in_range(report_range)
        .annotate(gpus_in_range=FilteredRelation("gpu_indices_row", condition=in_range))
        .annotate(**reservation_figures(now=now))
        .annotate(**aliased)
        .order_by("start", "pk")
        .values_list(*aliased)
    )
    sql, params = query.query.sql_with_params()
    return f"COPY ({sql}) TO STDOUT (FORMAT csv)", params


def copied_reservations_csv(*, report_range: ReportRange, now: datetime, bom: bool) -> Iterator[bytes]:
    """The header (with `bom`, a byte-order mark first), then PostgreSQL's rows in pieces
    of about PIECE_BYTES. PostgreSQL sends one message per row, ending in a line feed."""
    yield from csv_bytes(RESERVATION_COLUMNS, (), bom=bom)
    statement, params = copy_statement(report_range=report_range, now=now)
    with connection.cursor() as cursor, cursor.cursor.copy(statement, params) as copy:
        rows, size = [], 0
        for row in copy:
            rows.append(bytes(row[:-1]))
            size += len(row)
            if size >= PIECE_BYTES:
                rows.append(b"")
                yield b"\r\n".join(rows)
                rows, size = [], 0
        if rows:
            rows.append(b"")
            yield b"\r\n".join(rows)
