"""A student whose booking does not fit waits for it, sees it booked, and withdraws
another: real Chromium against a live server."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from bookings.models import Reservation, WaitlistEntry
from bookings.services import reservation_cancel
from bookings.timeslots import SLOT, slot_floor
from bookings.waitlist_services import waitlist_book_due
from tests.e2e.test_student_flow import fill_booking, first_login_student, signed_in  # noqa: F401 - fixtures
from tests.factories import ReservationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_refused_booking_waits_and_is_booked_when_the_gpus_free_up(signed_in, host, screenshot):  # noqa: F811
    page = signed_in
    start = slot_floor(timezone.now()) + SLOT * 4
    blocker = ReservationFactory(
        user=UserFactory(username="m11200001"),
        host=host,
        start=start,
        end=start + timedelta(hours=6),
        gpus=list(host.gpus.all()),
    )
    fill_booking(page, start=start)
    page.get_by_role("button", name="Book", exact=True).click()
    offer = page.get_by_test_id("waitlist-offer")
    expect(offer).to_be_visible()
    screenshot(page, "booking-refused-waitlist-offer")

    offer.get_by_role("button", name="Wait for this window").click()

    expect(page.get_by_role("heading", name="My waiting requests")).to_be_visible()
    entry = WaitlistEntry.objects.get()
    row = page.get_by_test_id(f"waitlist-entry-{entry.pk}")
    expect(row).to_contain_text("Waiting")
    screenshot(page, "waitlist")
    assert not Reservation.objects.exclude(pk=blocker.pk).exists()

    reservation_cancel(reservation=blocker)
    waitlist_book_due(now=timezone.now())
    page.reload()
    expect(row).to_contain_text("Booked")
    entry.refresh_from_db()
    expect(row.get_by_role("link", name=f"#{entry.reservation_id}")).to_be_visible()


def test_a_student_withdraws_a_waiting_request(signed_in, host):  # noqa: F811
    page = signed_in
    start = slot_floor(timezone.now()) + SLOT * 4
    ReservationFactory(
        user=UserFactory(username="m11200001"),
        host=host,
        start=start,
        end=start + timedelta(days=3),
        gpus=list(host.gpus.all()),
    )
    fill_booking(page, start=start)
    page.get_by_role("button", name="Book", exact=True).click()
    page.get_by_test_id("waitlist-offer").get_by_role(
        "button", name="Wait for the first window of this length from the start"
    ).click()
    expect(page.get_by_role("heading", name="My waiting requests")).to_be_visible()
    page.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_text("The waiting request was withdrawn.")).to_be_visible()
    assert WaitlistEntry.objects.get().status == WaitlistEntry.Status.WITHDRAWN
