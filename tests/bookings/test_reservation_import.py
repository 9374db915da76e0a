"""`reservation_import`: another system's reservations, past or booked, written as they
stand; only the rules that keep the portal consistent apply."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from bookings.import_services import reservation_import
from bookings.models import Reservation
from tests.factories import HostFactory, ReservationFactory, UserFactory, local


@pytest.fixture
def lab(db, image):
    host = HostFactory(name="gpu-old", cpus=4, ram_gb=8, swap_gb=0, gpus=2)
    return host, list(host.gpus.order_by("index")), image


def write(lab, *, user, start, hours=3, gpus=(0,), status="ended", cpus="2", **overrides):
    host, all_gpus, image = lab
    values = {
        "user": user,
        "host": host,
        "start": start,
        "end": start + timedelta(hours=hours),
        "cpus": Decimal(cpus),
        "memory_gb": 4,
        "gpus": [all_gpus[index] for index in gpus],
        "status": status,
        "image": image,
        "extra_command": "",
        "forward_port": user.forward_port,
    }
    return reservation_import(**{**values, **overrides})


@pytest.mark.django_db
def test_a_past_reservation_over_every_limit_for_new_bookings_is_imported(lab):
    # Long past, longer than 14 days, more CPUs than the host and no profile at all.
    user = UserFactory()
    saved = write(lab, user=user, start=local(2024, 1, 1, 9), hours=24 * 30, cpus="64")
    reservation = saved.instance
    assert saved.created
    assert (reservation.status, reservation.ended_at, reservation.started_at) == (
        Reservation.Status.ENDED,
        reservation.end,
        reservation.start,
    )
    assert list(reservation.allocations.values_list("gpu__index", "active")) == [(0, False)]


@pytest.mark.django_db
def test_importing_the_same_row_again_changes_nothing_and_a_change_updates_it(lab):
    user = UserFactory()
    first = write(lab, user=user, start=local(2026, 3, 4, 10), status="scheduled")
    assert write(lab, user=user, start=local(2026, 3, 4, 10), status="scheduled").action == "unchanged"
    moved = write(lab, user=user, start=local(2026, 3, 4, 10), status="scheduled", gpus=(1,))
    assert (moved.instance.pk, moved.changed) == (first.instance.pk, ["GPU allocations"])
    assert Reservation.objects.count() == 1
    assert moved.instance.gpu_indices() == [1]


@pytest.mark.django_db
def test_a_live_row_whose_gpu_is_held_is_refused_by_the_capacity_engine(lab):
    host, gpus, _ = lab
    ReservationFactory(host=host, start=local(2026, 3, 4, 9), end=local(2026, 3, 4, 18), gpus=[gpus[0]])
    with pytest.raises(ValidationError, match="GPU 0 is already held"):
        write(lab, user=UserFactory(), start=local(2026, 3, 4, 10), status="scheduled")
    # Ended history may overlap: the old checker handed GPUs out twice.
    write(lab, user=UserFactory(), start=local(2026, 3, 4, 10), status="ended")


@pytest.mark.django_db
def test_a_live_row_overlapping_its_users_other_booking_is_refused(lab):
    user = UserFactory()
    write(lab, user=user, start=local(2026, 3, 4, 10), status="scheduled", gpus=())
    with pytest.raises(ValidationError, match="overlaps with your previous booking"):
        write(lab, user=user, start=local(2026, 3, 4, 12), status="running", gpus=())
    assert Reservation.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("port", [22, 0, 65535])
def test_a_live_row_cannot_publish_a_port_outside_the_lab_range(lab, port):
    with pytest.raises(ValidationError, match="port must be within"):
        write(lab, user=UserFactory(), start=local(2026, 3, 4, 10), status="scheduled", forward_port=port)
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_a_live_row_cannot_take_another_students_port(lab, now):
    victim = UserFactory()
    with pytest.raises(ValidationError, match="Another account already uses this port"):
        write(
            lab,
            user=UserFactory(),
            start=local(2026, 3, 4, 10),
            status="scheduled",
            forward_port=victim.forward_port,
            now=now,
        )
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_a_live_row_cannot_take_a_port_another_live_reservation_still_publishes(lab, settings, now):
    host, _, _ = lab
    importer, moved_on = UserFactory(), UserFactory()
    ReservationFactory(user=moved_on, host=host, start=local(2026, 3, 2, 9), end=local(2026, 3, 2, 20))
    held_port = moved_on.forward_port
    moved_on.forward_port = settings.PORT_RANGE.stop - 1
    moved_on.save(update_fields=["forward_port"])
    with pytest.raises(ValidationError, match="Another account already uses this port"):
        write(
            lab,
            user=importer,
            start=local(2026, 3, 4, 10),
            status="scheduled",
            forward_port=held_port,
            now=now,
        )


@pytest.mark.django_db
def test_ended_history_keeps_whatever_port_it_had(lab):
    saved = write(lab, user=UserFactory(), start=local(2024, 1, 1, 9), status="ended", forward_port=22)
    assert saved.instance.forward_port == 22


@pytest.mark.django_db
def test_a_live_row_on_a_gpu_out_of_service_says_so(lab):
    _, gpus, _ = lab
    gpus[0].is_active = False
    gpus[0].save(update_fields=["is_active"])
    with pytest.raises(ValidationError, match="GPU 0 is out of service"):
        write(lab, user=UserFactory(), start=local(2026, 3, 4, 10), status="scheduled")
