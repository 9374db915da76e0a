"""Pages that tell the truth and fit: the timeline of a host without GPUs, and the admin's
busiest lists on a 1280 px screen. Screenshots go to artifacts/screenshots/fit-*."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from bookings.models import Reservation
from containers import events
from containers.models import HostAgent
from containers.services import event_record
from tests.factories import HostFactory, ReservationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "a-long-enough-passphrase-7"
WIDTHS = """() => [...document.querySelectorAll('#result_list thead th')].map(
    th => th.className + ':' + Math.round(th.getBoundingClientRect().width))"""
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def _sign_in(page, user) -> None:
    user.set_password(PASSWORD)
    user.save()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture
def cpu_host(db):
    return HostFactory(name="cpu-01", cpus=32, ram_gb=128, swap_gb=0)


def test_the_timeline_draws_holds_on_a_host_without_gpus(page, screenshot, cpu_host, default_profile, image):
    student = UserFactory(username="m11007s05")
    start = timezone.now() + timedelta(hours=1)
    ReservationFactory(user=student, host=cpu_host, start=start, end=start + timedelta(hours=6), cpus=4)
    ReservationFactory(
        user=UserFactory(username="other"),
        host=cpu_host,
        start=start + timedelta(hours=2),
        end=start + timedelta(hours=9),
        kind=Reservation.Kind.JOB,
    )
    _sign_in(page, student)
    page.goto("/timeline/")
    rows = page.get_by_test_id("cpu-row")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("a.tl-block.own")).to_have_text(student.username)
    expect(rows.nth(1).locator(".tl-block.job")).to_have_text("job")
    screenshot(page, "fit-timeline-gpu-less-host")


@pytest.fixture
def busy_admin(db, host, default_profile, image):
    keeper = UserFactory(username="keeper", is_staff=True, is_superuser=True)
    users = [UserFactory(username=f"m1100{n}s{n:02d}-with-a-long-account") for n in range(5)]
    for n, user in enumerate(users):
        reservation = ReservationFactory(user=user, host=host)
        event_record(
            event=events.died_restarting(
                username=user.username,
                what="exited with code 137 (out of memory: the kernel killed the main process)",
                count=n,
                limit=3,
            ),
            reservation=reservation,
        )
    for n in range(3):
        agent_host = HostFactory(name=f"gpu-server-with-a-long-name-{n:02d}", served_by_agent=True)
        HostAgent.objects.create(
            host=agent_host,
            last_seen_at=timezone.now(),
            holder=f"gpu-server-with-a-long-name-{n:02d}.lab.example:12345:0123456789abcdef",
            version="2026.12.1-rc3+g1e665cf",
            engine_version="27.5.1",
            nvml_driver="550.127.05",
            cuda_driver_version="12.4",
        )
    return keeper


@pytest.mark.parametrize(
    ("url", "name", "columns"),
    [
        ("/admin/containers/containerevent/", "fit-admin-events", ("user", "host", "reservation_number")),
        ("/admin/containers/host/", "fit-admin-hosts", ("agent_health", "agent_last_seen")),
    ],
)
def test_the_admin_lists_fit_a_1280_px_screen(page, screenshot, busy_admin, url, name, columns):
    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, busy_admin)
    page.goto(url)
    expect(page.locator("#result_list")).to_be_visible()
    screenshot(page, name)
    assert page.evaluate(OVERFLOW) <= 0
    # The list scrolls inside its own box: every column must show without scrolling it.
    results = page.locator("#changelist .results")
    assert results.evaluate("box => box.scrollWidth - box.clientWidth") <= 0, page.evaluate(WIDTHS)
    right = results.bounding_box()["x"] + results.bounding_box()["width"]
    for column in columns:
        header = page.locator(f"#result_list th.column-{column}")
        expect(header).to_be_visible()
        box = header.bounding_box()
        assert box["x"] + box["width"] <= min(right, 1280), column
