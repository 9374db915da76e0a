import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from bookings.models import Reservation
from bookings.timeslots import SLOT, slot_floor
from containers.models import ImagePresence
from tests.factories import ReservationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FIRST_PASSWORD = "handed-over-0000"
OWN_PASSWORD = "a-much-better-passphrase-42"


@pytest.fixture
def first_login_student(default_profile, image, host):
    # The host's agent found the image in its engine: a booking of it is "successful".
    ImagePresence.objects.create(host=host, image=image, state=ImagePresence.State.PRESENT)
    user = UserFactory(username="m11007s05", must_change_password=True)
    user.set_password(FIRST_PASSWORD)
    user.save()
    return user


@pytest.fixture
def signed_in(page, first_login_student):
    log_in(page, "m11007s05", FIRST_PASSWORD)
    change_first_password(page)
    return page


def log_in(page, username, password):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def change_first_password(page):
    expect(page.get_by_text("Please choose your own password")).to_be_visible()
    page.get_by_label("Old password").fill(FIRST_PASSWORD)
    page.get_by_label("New password", exact=True).fill(OWN_PASSWORD)
    page.get_by_label("New password confirmation").fill(OWN_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def fill_booking(page, *, start, cpus="2", memory="8", gpus="1", duration="1-day"):
    local = timezone.localtime(start)
    page.goto("/reservations/new/")
    expect(page.get_by_test_id("max-capability").first).to_contain_text(
        "Your limits: 8 CPUs, 32 GiB memory (RAM + swap), 1 GPUs"
    )
    page.get_by_label("Start date").fill(f"{local:%Y-%m-%d}")
    page.get_by_label("Start time").select_option(f"{local:%H:%M}")
    page.get_by_label("Duration", exact=True).select_option(duration)
    page.get_by_label("CPUs", exact=True).fill(cpus)
    page.get_by_label("Memory (GiB)").fill(memory)
    page.get_by_label("GPUs", exact=True).fill(gpus)
    page.get_by_label("GPUs", exact=True).press("Tab")


def test_a_student_books_sees_and_cancels_a_gpu_slot(signed_in, screenshot, first_login_student):
    page = signed_in
    start = slot_floor(timezone.now()) + SLOT * 4
    fill_booking(page, start=start)
    # The free capacity of the chosen window arrives without a page load.
    expect(page.get_by_test_id("free-capacity")).to_contain_text(
        f"{timezone.localtime(start):%Y-%m-%d %H:%M}"
    )
    screenshot(page, "booking-form")
    page.get_by_role("button", name="Book", exact=True).click()
    expect(page.get_by_text("Booking successful!")).to_be_visible()
    reservation = Reservation.objects.get(user=first_login_student)
    assert reservation.gpu_count == 1

    page.get_by_role("link", name="Timeline").click()
    own_block = page.locator("a.tl-block.own")
    expect(own_block).to_have_count(1)
    expect(own_block).to_have_text("m11007s05")
    screenshot(page, "timeline")

    page.get_by_role("link", name="Dashboard").click()
    upcoming = page.locator("section", has=page.get_by_role("heading", name="Upcoming"))
    expect(upcoming.get_by_role("link", name=f"#{reservation.pk}")).to_be_visible()
    screenshot(page, "dashboard")

    upcoming.get_by_role("link", name=f"#{reservation.pk}").click()
    page.get_by_role("link", name="Cancel reservation").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.get_by_test_id("status")).to_have_text("Cancelled")
    reservation.refresh_from_db()
    assert reservation.status == Reservation.Status.CANCELLED


def test_an_over_quota_request_is_refused_next_to_the_field(signed_in):
    page = signed_in
    fill_booking(page, start=slot_floor(timezone.now()) + SLOT * 4, cpus="9")
    page.get_by_role("button", name="Book", exact=True).click()
    cpus_field = page.locator(".field", has=page.locator("#id_cpus"))
    expect(cpus_field.locator(".errorlist")).to_contain_text("Over the maximum required.")
    assert not Reservation.objects.exists()


def test_a_full_window_offers_the_earliest_window_that_fits(signed_in, host, screenshot):
    page = signed_in
    start = slot_floor(timezone.now()) + SLOT * 4
    free_from = start + timedelta(hours=6)
    ReservationFactory(
        user=UserFactory(username="m11200001"),
        host=host,
        start=start,
        end=free_from,
        gpus=list(host.gpus.all()),
    )
    fill_booking(page, start=start)
    expect(page.locator("#capacity").get_by_test_id("suggestion")).to_contain_text(
        f"{timezone.localtime(free_from):%Y-%m-%d %H:%M}"
    )
    page.get_by_role("button", name="Book", exact=True).click()
    errors = page.get_by_test_id("form-errors")
    expect(errors).to_contain_text("There is not enough computing power for the time you need, book again.")
    expect(errors.get_by_test_id("suggestion")).to_contain_text(
        f"The earliest window of the same length that fits: {timezone.localtime(free_from):%Y-%m-%d %H:%M}"
    )
    screenshot(page, "booking-form-full-window")
    errors.get_by_role("link", name="Use this window").click()
    page.get_by_role("button", name="Book", exact=True).click()
    expect(page.get_by_text("Booking successful!")).to_be_visible()
    assert Reservation.objects.get(user__username="m11007s05").start == free_from


def test_the_language_switch_shows_the_pages_in_traditional_chinese(signed_in, screenshot):
    page = signed_in
    page.get_by_label("Language").select_option("zh-hant")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_role("heading", name="總覽")).to_be_visible()
    expect(page.get_by_test_id("max-capability")).to_contain_text("你的最大可用資源")
    screenshot(page, "dashboard-zh-hant")
