"""`aivc waitlist` against a live server: add, list, withdraw."""

from datetime import timedelta

import pytest
from aivc_cli import client
from django.utils import timezone

from bookings.models import WaitlistEntry
from bookings.timeslots import slot_floor
from tests.cli.test_aivc import aivc, logged_in  # noqa: F401 - the fixtures
from tests.factories import HostFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_student_waits_lists_and_withdraws_from_the_shell(logged_in, student):  # noqa: F811
    host = HostFactory(name="gpu-one", gpus=1)
    start = slot_floor(timezone.now())
    ReservationFactory(
        user=UserFactory(), host=host, start=start, end=start + timedelta(days=1), gpus=list(host.gpus.all())
    )

    added = logged_in(
        "waitlist",
        "add",
        "--host",
        "gpu-one",
        "--gpus",
        "1",
        "--cpus",
        "2",
        "--memory",
        "8",
        "--end",
        "1-day",
        "--first-after",
        "--latest-start",
        "2-day",
    )
    assert added.exit_code == 0, added.output
    entry = WaitlistEntry.objects.get(user=student)
    assert added.output.startswith(f"Waiting: #{entry.pk}") and "first 24h" in added.output

    listed = logged_in("waitlist", "ls")
    assert listed.exit_code == 0 and f"#{entry.pk}" in listed.output and "waiting" in listed.output

    withdrawn = logged_in("waitlist", "withdraw", str(entry.pk))
    assert withdrawn.exit_code == 0 and "withdrawn" in withdrawn.output
    again = logged_in("waitlist", "withdraw", str(entry.pk))
    assert again.exit_code == client.EXIT_REFUSED and "Only a waiting request" in again.output
    assert logged_in("waitlist", "withdraw", "999999").exit_code == client.EXIT_NOT_FOUND


def test_a_latest_start_without_first_after_is_wrong_usage(logged_in):  # noqa: F811
    result = logged_in(
        "waitlist", "add", "--cpus", "1", "--memory", "1", "--end", "1-day", "--latest-start", "1-day"
    )
    assert result.exit_code == 2 and "--first-after" in result.output
