"""Legacy images that expect a PASSWORD variable start containers nobody can enter: the
booking path refuses them instead."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from bookings.forms import BookingForm
from bookings.services import KEYLESS_IMAGE, reservation_create
from containers.models import Image
from tests.factories import HostFactory, ImageFactory, local

NOW = local(2026, 3, 2, 9, 10)


@pytest.fixture
def legacy_image(db):
    return ImageFactory(reference="rober5566a/aivc-server:v1", login=Image.Login.PASSWORD)


def test_it_refuses_a_booking_of_an_image_that_needs_a_password(student, legacy_image):
    host = HostFactory(gpus=1)
    with pytest.raises(ValidationError) as refused:
        reservation_create(
            user=student,
            host=host,
            start="now",
            end="1-day",
            cpus=1,
            memory_gb=1,
            image=legacy_image,
            now=NOW,
        )
    assert refused.value.message_dict == {"image": [KEYLESS_IMAGE]}


def test_the_booking_form_offers_only_images_that_take_the_portals_keys(student, image, legacy_image):
    choices = list(BookingForm(user=student).fields["image"].queryset)
    assert image in choices
    assert legacy_image not in choices


def test_admin_lists_how_each_image_logs_in(admin_client, legacy_image):
    page = admin_client.get(reverse("admin:containers_image_changelist"))
    assert page.status_code == 200
    assert "Password variable (legacy image, cannot be booked)" in page.content.decode()
