"""The API's pages in a real browser: a token made on the profile page is shown once and
then works against the API; the offline docs render; the notification badge counts."""

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.tasks import send_notifications
from bookings.models import Reservation
from tests.e2e.test_student_flow import FIRST_PASSWORD, change_first_password, log_in
from tests.factories import ReservationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def newcomer(default_profile, image, host):
    user = UserFactory(username="m11007s05", must_change_password=True)
    user.set_password(FIRST_PASSWORD)
    user.save()
    return user


@pytest.fixture
def signed_in(page, newcomer):
    log_in(page, newcomer.username, FIRST_PASSWORD)
    change_first_password(page)
    return page


def test_a_token_made_on_the_profile_page_is_shown_once_and_works(signed_in, live_server, screenshot):
    page = signed_in
    page.goto("/accounts/profile/")
    page.get_by_label("Token name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    token = page.get_by_test_id("new-token").inner_text().strip()
    assert token.startswith("aivc_")
    screenshot(page, "profile-new-token")
    answer = httpx.get(f"{live_server.url}/api/v1/profile/", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["username"] == "m11007s05"
    page.goto("/accounts/profile/")
    expect(page.get_by_test_id("new-token")).to_have_count(0)
    page.get_by_role("button", name="Revoke").click()
    answer = httpx.get(f"{live_server.url}/api/v1/profile/", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


def test_the_api_docs_render_offline(signed_in, screenshot):
    page = signed_in
    requests_outside: list[str] = []

    def note(request) -> None:
        if "localhost" not in request.url:
            requests_outside.append(request.url)

    page.on("request", note)
    page.goto("/api/docs/")
    expect(page.get_by_text("AIVC Portal API").first).to_be_visible()
    screenshot(page, "api-docs")
    assert requests_outside == []


def test_the_header_badge_leads_to_the_notifications(signed_in, newcomer, host, screenshot):
    page = signed_in
    now = timezone.now()
    ReservationFactory(
        user=newcomer,
        host=host,
        start=now - timedelta(minutes=10),
        end=now + timedelta(hours=2),
        status=Reservation.Status.RUNNING,
        started_at=now,
    )
    send_notifications()
    page.goto("/")
    expect(page.get_by_test_id("unread-badge")).to_contain_text("1")
    page.get_by_test_id("notifications-link").click()
    expect(page.get_by_text("is running")).to_be_visible()
    screenshot(page, "notifications")
    page.get_by_role("button", name="Mark all read").click()
    expect(page.get_by_test_id("unread-badge")).to_have_count(0)
