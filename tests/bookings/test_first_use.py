"""What a new user met in the browser, each fixed: ISO dates in every language, local
times in admin, form help and errors that screen readers find."""

import pytest
from django.urls import reverse
from django.utils import translation

from bookings.forms import BookingForm, ExtendForm
from tests.factories import ReservationFactory, local

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("language", ["en", "zh-hant"])
def test_date_widgets_render_iso_dates_in_every_language(student, language):
    with translation.override(language):
        booking = BookingForm(user=student, initial={"start_date": local(2026, 11, 23).date()})
        extend = ExtendForm(
            current_end=local(2026, 11, 23, 10), initial={"end_date": local(2026, 11, 23).date()}
        )
        assert 'value="2026-11-23"' in str(booking["start_date"])
        assert 'value="2026-11-23"' in str(extend["end_date"])


def test_the_zh_hant_booking_form_submits_its_own_default_date(client, student, host, image):
    client.force_login(student)
    client.post(reverse("set_language"), {"language": "zh-hant"})
    page = client.get(reverse("reservation-new")).content.decode()
    assert 'lang="zh-Hant"' in page
    assert "/" not in page.split('name="start_date"')[1].split(">")[0]


def test_admin_names_reservations_in_local_time(admin_client):
    reservation = ReservationFactory(start=local(2026, 3, 2, 0, 30), end=local(2026, 3, 2, 2))
    assert str(reservation).endswith("2026-03-02 00:30")
    page = admin_client.get(reverse("admin:bookings_gpuallocation_changelist"))
    assert page.status_code == 200


def test_help_and_error_ids_match_djangos_aria_describedby(client, student, host, image):
    client.force_login(student)
    page = client.post(reverse("reservation-new"), {"host": host.pk, "cpus": "x"}).content.decode()
    assert 'aria-describedby="id_extra_command_helptext"' in page
    assert 'id="id_extra_command_helptext"' in page
    assert 'aria-describedby="id_cpus_error"' in page
    assert 'id="id_cpus_error"' in page


def test_over_the_maximum_reads_in_traditional_chinese(client, student, host, image):
    from tests.bookings.test_views import booking_data

    client.force_login(student)
    client.post(reverse("set_language"), {"language": "zh-hant"})
    page = client.post(reverse("reservation-new"), booking_data(host, image, cpus="99")).content.decode()
    assert "超過可申請的上限。" in page
    assert "Over the maximum required." not in page


def test_limits_say_their_units_and_that_memory_is_ram_plus_swap(client, student, host):
    client.force_login(student)
    page = client.get(reverse("dashboard")).content.decode()
    assert "Your limits: 8 CPUs, 32 GiB memory (RAM + swap), 1 GPUs" in page
