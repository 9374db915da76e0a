"""The usage page in a real browser: staff see the four charts drawn from a small lab's
numbers, filter by host, and download a chart's CSV; a student sees only their own."""

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.e2e.test_student_flow import log_in
from tests.factories import HostFactory, JobFactory, ReservationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "correct-horse-battery"


@pytest.fixture
def lab(db):
    """Two hosts, two students with GPU bookings and jobs over the last three weeks."""
    one, two = HostFactory(name="gpu-01", gpus=2), HostFactory(name="gpu-02", gpus=1)
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    today = timezone.localtime().replace(hour=9, minute=0, second=0, microsecond=0)
    for day in range(1, 20, 2):
        start = today - timedelta(days=day)
        gpu = one.gpus.get(index=day % 2)
        ReservationFactory(
            user=alice if day % 3 else bob,
            host=one,
            start=start,
            end=start + timedelta(hours=6),
            status="ended",
            started_at=start,
            ended_at=start + timedelta(hours=4),
            gpus=[gpu],
        )
        JobFactory(
            user=bob, submitted_at=start, started_at=start + timedelta(minutes=20 * day), status="succeeded"
        )
    ReservationFactory(
        user=bob,
        host=two,
        start=today - timedelta(days=2),
        end=today - timedelta(days=2) + timedelta(hours=3),
        status="ended",
        started_at=today - timedelta(days=2),
        ended_at=today - timedelta(days=2) + timedelta(hours=3),
        gpus=list(two.gpus.all()),
    )
    return {"alice": alice, "bob": bob, "gpu-02": two}


def test_staff_see_the_charts_filter_by_host_and_download_a_chart(page, lab, screenshot):
    UserFactory(username="staff01", is_staff=True)
    log_in(page, "staff01", PASSWORD)
    page.goto("/reports/")
    page.get_by_test_id("usage-link").click()
    for chart in ("chart-weekly", "chart-occupancy", "chart-top-users", "chart-waits"):
        expect(page.get_by_test_id(chart).locator("svg")).to_be_visible()
    # The heatmap has a row per GPU; the top users name both students.
    expect(page.get_by_test_id("chart-occupancy").locator("svg > text", has_text="GPU")).to_have_count(3)
    expect(page.get_by_test_id("chart-top-users").locator("svg")).to_contain_text("alice")
    screenshot(page, "usage-staff")
    page.get_by_label("Host").select_option(label="gpu-02")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_test_id("chart-occupancy").locator("svg > text", has_text="GPU")).to_have_count(1)
    screenshot(page, "usage-staff-one-host")
    with page.expect_download() as download:
        page.get_by_role("link", name="Per user and week (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert {row["user"] for row in rows} == {"bob"}  # only gpu-02's holds


def test_a_student_sees_only_their_own_usage(page, lab, screenshot):
    log_in(page, "alice", PASSWORD)
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Your usage")).to_be_visible()
    expect(page.get_by_test_id("chart-weekly").locator("svg")).to_be_visible()
    expect(page.get_by_test_id("chart-occupancy")).to_have_count(0)
    expect(page.get_by_test_id("chart-top-users")).to_have_count(0)
    screenshot(page, "usage-student")
