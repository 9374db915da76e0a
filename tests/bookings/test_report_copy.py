"""The reservations CSV that PostgreSQL writes (COPY) is byte for byte the one Python
writes row by row, for every kind of reservation, cell and time zone."""

import random
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from bookings import report_copy
from bookings.reports import (
    RESERVATION_COLUMNS,
    WHITESPACE,
    ReportRange,
    csv_bytes,
    neutralise,
    reservation_rows,
    reservations_csv_bytes,
)
from tests.factories import HostFactory, ImageFactory, ReservationFactory, UserFactory, local

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's"),
]
MARCH = ReportRange(first=local(2026, 3, 1).date(), last=local(2026, 3, 31).date())
NOW = local(2026, 3, 20, 15, 7) + timedelta(seconds=13.25)
# Characters the neutralising rule and the CSV quoting care about, and some that they must not.
STATUSES = ["ended", "cancelled", "ended", "running", "starting", "failed", "blocked", "scheduled"]
TRICKY = ["=", "+", "-", "@", "\t", "\r", "\n", ";", ",", " ", "\xa0", "\u3000", "\u2028", '"', "'", "a", "1"]


def both_exports(report_range: ReportRange, now) -> tuple[bytes, bytes]:
    copied = b"".join(reservations_csv_bytes(report_range=report_range, now=now))
    python = b"".join(csv_bytes(RESERVATION_COLUMNS, reservation_rows(report_range=report_range, now=now)))
    return copied, python


def test_whitespace_is_all_of_pythons():
    everything = "".join(chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace())
    assert everything == WHITESPACE


@pytest.fixture
def every_kind(db):
    """Reservations of every status and history, back to back on one host, with text
    cells drawn from the characters that matter."""
    rng = random.Random(12)
    host = HostFactory(name="gpu-07", gpus=2)
    gpus = list(host.gpus.order_by("index"))
    images = [ImageFactory(reference="lab/torch:2"), None]
    users = [UserFactory(username=name) for name in ("alice", "bob", "carol")]
    begin = local(2026, 3, 1, 0)
    for index in range(240):
        start = begin + timedelta(hours=2 * index, minutes=rng.choice([0, 30]))
        end = start + timedelta(minutes=rng.choice([30, 60, 90]))
        kind = index % len(STATUSES)
        fields = {
            "status": STATUSES[kind],
            "started_at": start + timedelta(seconds=rng.randint(0, 900)) if kind in (0, 2, 3, 4) else None,
            "ended_at": end - timedelta(seconds=rng.randint(0, 2000)) if kind in (0, 2) else None,
            "cancelled_at": start - timedelta(hours=1) if kind == 1 else None,
            "released_at": start + timedelta(minutes=rng.randint(-30, 70)) if kind == 2 else None,
            "booked_end": end + timedelta(minutes=30) if kind == 2 else None,
            "charged_from": start + timedelta(minutes=rng.randint(1, 29)) if index % 5 == 0 else None,
            "kind": "job" if index % 4 == 0 else None,
            "ended_by": rng.choice(["owner", "maintainer", "system", "job"]) if kind in (1, 2) else None,
        }
        command = "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 9)))
        taken = gpus[: rng.randint(0, 2)]
        ReservationFactory(
            user=users[index % 3],
            host=host,
            image=images[index % 2],
            start=start,
            end=end,
            cpus=Decimal(rng.choice(["1", "1.5", "2.25"])),
            extra_command=command,
            gpus=taken,
            **{name: value for name, value in fields.items() if value is not None},
        )


def test_copy_writes_the_same_bytes_as_python(every_kind):
    copied, python = both_exports(MARCH, NOW)
    assert copied.count(b"\r\n") >= 241
    assert copied == python


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_copy_writes_local_times_in_the_current_time_zone(every_kind, zone):
    with timezone.override(zone):
        copied, python = both_exports(MARCH, NOW)
    assert copied == python


def test_copy_neutralises_exactly_as_python_does(db):
    host = HostFactory(name="gpu-08")
    cells = ["", "=1", " \xa0=1", "\u3000+2", "a;=1", "x\r\n@SUM(A1)", "\t=1+1", "ok, -2", "a=b"]
    cells.append("\u2028;\xa0-1")
    for index, cell in enumerate(cells):
        start = local(2026, 3, 2) + timedelta(hours=index)
        ReservationFactory(host=host, start=start, end=start + timedelta(hours=1), extra_command=cell)
    copied, python = both_exports(MARCH, NOW)
    assert copied == python
    assert [neutralise(cell) for cell in cells[:3]] == ["", "'=1", "' \xa0=1"]


def test_a_download_stopped_half_way_leaves_the_connection_usable(every_kind, monkeypatch):
    monkeypatch.setattr(report_copy, "PIECE_BYTES", 200)
    pieces = reservations_csv_bytes(report_range=MARCH, now=NOW)
    next(pieces), next(pieces), next(pieces)
    pieces.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
