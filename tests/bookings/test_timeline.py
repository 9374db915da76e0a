"""The timeline tells the truth on a host without GPUs: CPU-only bookings and jobs show in
rows of their own; another's job is anonymous to a student and named to staff."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.models import Reservation
from bookings.timeline import timeline
from tests.factories import HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db
START = local(2026, 3, 2, 12)
NOW = local(2026, 3, 2, 10, 10)


@pytest.fixture
def cpu_host(db):
    return HostFactory(name="cpu-01", cpus=32, ram_gb=128, swap_gb=0)


def test_a_gpu_less_hosts_holds_are_drawn_in_lanes_that_do_not_overlap(cpu_host, student):
    other = UserFactory(username="someone")
    ReservationFactory(user=student, host=cpu_host, start=START, end=START + timedelta(hours=2))
    ReservationFactory(
        user=other, host=cpu_host, start=START + timedelta(hours=1), end=START + timedelta(hours=3)
    )
    ReservationFactory(
        user=other,
        host=cpu_host,
        start=START + timedelta(hours=2),
        end=START + timedelta(hours=4),
        kind=Reservation.Kind.JOB,
    )
    (row,) = timeline(user_id=student.pk, now=NOW).hosts
    assert row.gpu_rows == []
    lanes = [[(b.column, b.span, b.username, b.own, b.is_job) for b in lane] for lane in row.cpu_rows]
    assert lanes == [
        [(5, 4, student.username, True, False), (9, 4, "", False, True)],
        [(7, 4, "someone", False, False)],
    ]


def test_staff_see_whose_job_holds_the_cpus(cpu_host, student):
    ReservationFactory(user=student, host=cpu_host, start=START, end=START + timedelta(hours=1), kind="job")
    (row,) = timeline(user_id=0, now=NOW, names_job_owners=True).hosts
    assert [b.username for lane in row.cpu_rows for b in lane] == [student.username]


def test_a_cpu_only_booking_on_a_gpu_host_is_drawn_too(host, student):
    gpus = list(host.gpus.all())
    other = UserFactory(username="someone")
    ReservationFactory(user=other, host=host, start=START, end=START + timedelta(hours=1), gpus=[gpus[0]])
    ReservationFactory(user=student, host=host, start=START, end=START + timedelta(hours=1))
    (row,) = timeline(user_id=student.pk, now=NOW).hosts
    assert [b.username for b in row.gpu_rows[0].blocks] == ["someone"]
    assert [[b.own for b in lane] for lane in row.cpu_rows] == [[True]]


def test_the_page_draws_the_holds_named_for_staff_and_anonymous_for_students(client, cpu_host, student):
    start = timezone.now() + timedelta(hours=2)
    ReservationFactory(
        user=UserFactory(username="jobowner"),
        host=cpu_host,
        start=start,
        end=start + timedelta(hours=2),
        kind=Reservation.Kind.JOB,
    )
    client.force_login(student)
    page = client.get(reverse("timeline")).content.decode()
    assert 'data-testid="cpu-row"' in page and "jobowner" not in page
    client.force_login(UserFactory(username="keeper", is_staff=True))
    assert "jobowner" in client.get(reverse("timeline")).content.decode()
