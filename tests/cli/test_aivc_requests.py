"""`aivc request` against a live server: ask for more, list the answers."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import LimitRequest
from tests.cli.test_aivc import aivc, logged_in  # noqa: F401 - the fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_student_asks_for_a_bigger_budget_and_lists_it(logged_in, student):  # noqa: F811
    until = f"{timezone.localdate() + timedelta(days=14):%Y-%m-%d}"
    sent = logged_in("request", "add", "--gpu-hours", "40", "--until", until, "--reason", "Thesis deadline.")
    assert sent.exit_code == 0, sent.output
    made = LimitRequest.objects.get(user=student)
    assert made.kind == "budget" and sent.output.startswith(f"Sent: #{made.pk}")

    listed = logged_in("request", "ls")
    assert listed.exit_code == 0 and "40.0 GPU-hours per week" in listed.output and "pending" in listed.output

    refused = logged_in("request", "add", "--gpu-hours", "-3", "--until", until, "--reason", "x")
    assert refused.exit_code == 4 and "above 0" in refused.output


def test_asking_for_two_things_at_once_is_wrong_usage(logged_in):  # noqa: F811
    result = logged_in(
        "request", "add", "--boost", "--gpu-hours", "4", "--until", "2030-01-01", "--reason", "x"
    )
    assert result.exit_code == 2 and "Ask for one thing" in result.output
