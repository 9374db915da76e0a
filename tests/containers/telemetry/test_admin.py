import pytest
from django.urls import reverse
from django.utils import timezone

from bookings.models import Reservation
from containers.telemetry.models import GpuDuplicateUse, GpuSample, ReservationGpuStatus
from tests.factories import ReservationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def idle(host):
    gpu = host.gpus.first()
    reservation = ReservationFactory(
        host=host,
        status=Reservation.Status.RUNNING,
        start=timezone.now() - timezone.timedelta(hours=2),
        end=timezone.now() + timezone.timedelta(hours=2),
        gpus=[gpu],
    )
    GpuSample.objects.create(gpu=gpu, taken_at=timezone.now(), utilisation_percent=1, memory_used_mb=1)
    GpuDuplicateUse.objects.create(
        gpu=gpu, pid=4242, holder=reservation, first_seen_at=timezone.now(), last_seen_at=timezone.now()
    )
    return ReservationGpuStatus.objects.create(reservation=reservation, idle_flagged_at=timezone.now())


@pytest.mark.parametrize("model", ["gpusample", "reservationgpustatus", "gpuduplicateuse"])
def test_the_telemetry_changelists_render(admin_client, idle, model):
    response = admin_client.get(reverse(f"admin:telemetry_{model}_changelist"))

    assert response.status_code == 200


def test_the_idle_filter_lists_idle_reservations(admin_client, idle):
    url = reverse("admin:telemetry_reservationgpustatus_changelist")

    assert admin_client.get(url, {"idle": "yes"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"idle": "no"}).context["cl"].result_count == 0


def test_maintainers_can_release_idle_reservations(admin_client, idle):
    url = reverse("admin:telemetry_reservationgpustatus_changelist")

    admin_client.post(url, {"action": "release_reservations", "_selected_action": [idle.pk]})

    idle.reservation.refresh_from_db()
    assert idle.reservation.released_at is not None
