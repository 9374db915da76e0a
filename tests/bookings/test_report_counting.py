"""Reports that count right: how each reservation ended is recorded by the service that
ended it and counted apart; a booking made for now is charged from when it was made."""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse

from bookings.maintenance import host_drain
from bookings.models import Reservation
from bookings.reports import ReportRange, reservation_rows
from bookings.services import (
    STOPPED_BY_MAINTAINER,
    reservation_cancel,
    reservation_create,
    reservation_release,
)
from jobs.models import Job
from jobs.services import job_cancel, job_finish
from tests.bookings.report_rows import named
from tests.conftest import NOW
from tests.factories import HostFactory, JobFactory, ReservationFactory, UserFactory, local

DAY = ReportRange(first=NOW.date(), last=NOW.date())
EndedBy = Reservation.EndedBy


def running(user, host, *, hours: int = 12, kind: str = "booking", start=None) -> Reservation:
    start = start or NOW - timedelta(hours=1)
    return ReservationFactory(
        user=user,
        host=host,
        kind=kind,
        start=start,
        end=start + timedelta(hours=hours),
        status="running",
        started_at=start,
    )


def running_job(user, host, *, start) -> Job:
    reservation = running(user, host, kind="job", start=start)
    return JobFactory(
        user=user, host=host, reservation=reservation, status="running", submitted_at=start, started_at=start
    )


@pytest.fixture
def lab(db):
    return HostFactory(name="gpu-01", gpus=2), HostFactory(name="gpu-02", gpus=1)


def test_each_service_records_who_ended_the_reservation(lab):
    one, two = lab
    student = UserFactory(username="alice")
    released = reservation_release(reservation=running(student, one, start=NOW - timedelta(hours=9)), now=NOW)
    stopped = reservation_release(
        reservation=running(student, one, start=NOW - timedelta(hours=5)),
        now=NOW,
        reason=STOPPED_BY_MAINTAINER,
        ended_by=EndedBy.MAINTAINER,
    )
    future = ReservationFactory(
        user=student, host=one, start=NOW + timedelta(days=1), end=NOW + timedelta(days=2)
    )
    cancelled = reservation_cancel(reservation=future, now=NOW)
    drained = running(student, two, start=NOW - timedelta(hours=2))
    host_drain(host=two, now=NOW)
    finished = running_job(student, one, start=NOW - timedelta(hours=3))
    job_finish(job=finished, status=Job.Status.SUCCEEDED, exit_code=0, now=NOW)
    withdrawn = running_job(student, one, start=NOW - timedelta(hours=7))
    job_cancel(job=withdrawn, now=NOW)
    drained.refresh_from_db()
    finished.reservation.refresh_from_db()
    withdrawn.reservation.refresh_from_db()
    assert [r.ended_by for r in (released, stopped, cancelled, drained)] == [
        EndedBy.OWNER,
        EndedBy.MAINTAINER,
        EndedBy.OWNER,
        EndedBy.MAINTAINER,
    ]
    assert (finished.reservation.ended_by, withdrawn.reservation.ended_by) == (EndedBy.JOB, EndedBy.OWNER)


def test_a_release_two_finished_jobs_and_a_drain_are_counted_apart(client, lab):
    """The issue's student: 4 "early releases" were 1 release, 2 finished jobs, 1 drain."""
    one, two = lab
    student = UserFactory(username="alice")
    reservation_release(reservation=running(student, one, start=NOW - timedelta(hours=9)), now=NOW)
    for hours_ago in (3, 5):
        job = running_job(student, one, start=NOW - timedelta(hours=hours_ago))
        job_finish(job=job, status=Job.Status.SUCCEEDED, exit_code=0, now=NOW)
    running(student, two, start=NOW - timedelta(hours=2))
    host_drain(host=two, now=NOW)
    rows = [named(row) for row in reservation_rows(report_range=DAY, now=NOW)]
    assert sorted((row["kind"], row["end_reason"]) for row in rows) == [
        ("booking", "released early"),
        ("booking", "stopped by maintainer"),
        ("job", "finished"),
        ("job", "finished"),
    ]
    client.force_login(UserFactory(username="staff01", is_staff=True))
    response = client.get(reverse("report-usage-csv"), {"from": DAY.first, "to": DAY.last})
    body = b"".join(response.streaming_content).decode()
    usage = {row["kind"]: row for row in csv.DictReader(io.StringIO(body))}
    assert set(usage) == {"booking", "job"}
    counts = ("reservations", "released_early", "stopped_by_maintainer", "finished", "cancelled")
    assert [usage["booking"][name] for name in counts] == ["2", "1", "1", "0", "0"]
    assert [usage["job"][name] for name in counts] == ["2", "0", "0", "2", "0"]


def test_a_booking_for_now_is_charged_from_the_moment_it_was_made(student, host):
    reservation = reservation_create(
        user=student,
        host=host,
        start="now",
        end=NOW + timedelta(hours=2, minutes=20),
        cpus=1,
        memory_gb=1,
        now=NOW,
    )
    assert reservation.start == local(2026, 3, 2, 10)  # the slot's start, for the timeline
    assert reservation.charged_from == NOW  # 10:10
    [row] = [named(row) for row in reservation_rows(report_range=DAY, now=NOW)]
    assert row["charged_from"] == "2026-03-02T10:10:00+08:00"
    assert row["hours_booked"] == "2.33"  # 10:10 to 12:30, not 2.50 from 10:00
    released = reservation_release(reservation=reservation, now=NOW + timedelta(minutes=5))
    assert released.ended_by == EndedBy.OWNER
    [row] = [named(row) for row in reservation_rows(report_range=DAY, now=NOW + timedelta(hours=1))]
    # Given back: from the release at 10:15 to 12:30.
    assert (row["hours_booked"], row["hours_given_back"]) == ("2.33", "2.25")


def test_a_booking_made_ahead_is_charged_from_its_start(student, host):
    reservation = reservation_create(
        user=student,
        host=host,
        start=local(2026, 3, 3, 10),
        end=local(2026, 3, 3, 12),
        cpus=1,
        memory_gb=1,
        now=NOW,
    )
    assert reservation.charged_from is None
    day = ReportRange(first=local(2026, 3, 3).date(), last=local(2026, 3, 3).date())
    [row] = [named(row) for row in reservation_rows(report_range=day, now=NOW)]
    assert (row["charged_from"], row["hours_booked"]) == ("", "2.00")
