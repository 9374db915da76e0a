"""Bookings that could not start are refused at booking time: an image the host's agent
found absent and unpullable (and never offered in the form), and a GPU booking on an image
built for a newer CUDA than the host's driver supports. A booking of an image not yet
checked on its host is taken, but not called successful."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from bookings.forms import BookingForm
from bookings.models import Reservation
from bookings.services import reservation_create
from containers.models import HostAgent, ImagePresence
from tests.api_helpers import token_client
from tests.factories import HostFactory, ImageFactory

pytestmark = pytest.mark.django_db
State = ImagePresence.State


def book(user, host, image, *, gpu_count=0, now=None):
    return reservation_create(
        user=user,
        host=host,
        start="now",
        end="1-day",
        cpus=1,
        memory_gb=1,
        gpu_count=gpu_count,
        image=image,
        now=now or timezone.now(),
    )


def found(host, image, state, *, ago=timedelta(minutes=1), message=""):
    return ImagePresence.objects.create(
        host=host, image=image, state=state, message=message, checked_at=timezone.now() - ago
    )


def driver_supports(host, cuda: str) -> None:
    HostAgent.objects.create(host=host, nvml_driver="535.104.05", cuda_driver_version=cuda)


# The image must be on the host ------------------------------------------------------------


def test_it_refuses_an_image_the_host_found_absent_and_unpullable_with_the_reason(student, host, image):
    found(host, image, State.FAILED, message="pull access denied for lab/aivc-server")
    with pytest.raises(ValidationError) as refused:
        book(student, host, image)
    [message] = refused.value.message_dict["image"]
    assert "The image lab/aivc-server:latest is not on gpu-01" in message
    assert "pull access denied for lab/aivc-server" in message
    assert not Reservation.objects.exists()


def test_an_old_finding_is_checked_again_rather_than_trusted(student, host, image, monkeypatch):
    found(host, image, State.FAILED, ago=timedelta(hours=2), message="pull access denied")
    queued = []
    monkeypatch.setattr("bookings.services.queue_host_task", lambda *args, **kwargs: queued.append(args))
    reservation = book(student, host, image)
    assert reservation.image == image
    assert queued, "the booking queues a fresh check of the image"


def test_the_form_offers_no_image_every_host_lacks_but_keeps_one_another_host_holds(student, host, image):
    lacking = ImageFactory(reference="aivc/lab:cuda12.4")
    found(host, lacking, State.FAILED, message="no registry")
    assert lacking not in BookingForm(user=student).fields["image"].queryset
    other = HostFactory(name="gpu-02")
    assert lacking in BookingForm(user=student).fields["image"].queryset
    found(other, lacking, State.FAILED, message="no registry")
    choices = list(BookingForm(user=student).fields["image"].queryset)
    assert lacking not in choices
    assert image in choices


def test_the_booking_page_says_successful_only_for_an_image_the_host_holds(client, student, host, image):
    client.force_login(student)
    data = {
        "host": host.pk,
        "start_now": "on",
        "end_kind": "duration",
        "duration": "1-day",
        "cpus": "1",
        "memory_gb": "1",
        "gpu_count": "0",
        "image": image.pk,
    }
    unchecked = client.post(reverse("reservation-new"), data, follow=True).content.decode()
    assert "Booking successful!" not in unchecked
    assert "gpu-01 is checking that it holds the image lab/aivc-server:latest" in unchecked

    Reservation.objects.update(status=Reservation.Status.CANCELLED)
    ImagePresence.objects.update_or_create(host=host, image=image, defaults={"state": State.PRESENT})
    held = client.post(reverse("reservation-new"), data, follow=True).content.decode()
    assert "Booking successful!" in held


# CUDA: the image's version against the host's driver --------------------------------------


def test_a_gpu_booking_on_a_cuda_newer_than_the_driver_is_refused_naming_both(student, host):
    image = ImageFactory(reference="aivc/lab:cuda12.4", cuda_version="12.4")
    driver_supports(host, "12.2")
    with pytest.raises(ValidationError) as refused:
        book(student, host, image, gpu_count=1)
    [message] = refused.value.message_dict["image"]
    assert "built for CUDA 12.4" in message
    assert "supports CUDA 12.2 at most" in message


@pytest.mark.parametrize(
    ("image_cuda", "driver_cuda", "gpu_count"),
    [
        ("12.4", "12.4", 1),  # the same version
        ("11.8", "12.4", 1),  # an older image on a newer driver
        ("12.4", "12.2", 0),  # no GPU: CUDA is never called
        ("12.4", "", 1),  # the agent reported no driver: unknown, not refused
        ("", "11.0", 1),  # the image names no CUDA version
    ],
)
def test_what_the_cuda_check_lets_through(student, host, image_cuda, driver_cuda, gpu_count):
    image = ImageFactory(reference="aivc/lab:checked", cuda_version=image_cuda)
    driver_supports(host, driver_cuda)
    assert book(student, host, image, gpu_count=gpu_count).image == image


def test_the_api_refuses_the_newer_cuda_with_the_same_words(student, host):
    image = ImageFactory(reference="aivc/lab:cuda12.4", cuda_version="cuda12.4.1")
    driver_supports(host, "11.8")
    response = token_client(student).post(
        "/api/v1/reservations/",
        {
            "host": host.name,
            "start": "now",
            "end": "1-day",
            "cpus": 1,
            "memory_gb": 1,
            "gpu_count": 1,
            "image": image.reference,
        },
        format="json",
    )
    assert response.status_code == 400
    text = str(response.json())
    assert "built for CUDA 12.4" in text and "supports CUDA 11.8 at most" in text
