import re
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from bookings.models import GpuAllocation, Reservation
from bookings.services import (
    NOT_ENOUGH_CAPACITY,
    OVER_MAXIMUM,
    forward_port_change,
    reservation_cancel,
    reservation_create,
    reservation_extend,
    reservation_release,
)
from tests.factories import (
    CapabilityProfileFactory,
    HostFactory,
    ImageFactory,
    ReservationFactory,
    UserFactory,
    local,
)

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)
SLOT = local(2026, 3, 2, 10, 0)


def book(user, host, start=None, end=None, cpus=1, memory_gb=1, gpu_count=0, **kwargs):
    start = start if start is not None else local(2026, 3, 2, 12)
    if end is None:
        end = start + timedelta(hours=1) if isinstance(start, datetime) else "1-day"
    return reservation_create(
        user=user,
        host=host,
        start=start,
        end=end,
        cpus=cpus,
        memory_gb=memory_gb,
        gpu_count=gpu_count,
        now=kwargs.pop("now", NOW),
        **kwargs,
    )


def messages_of(error: pytest.ExceptionInfo) -> str:
    return " ".join(error.value.messages)


# Rule 1: the grid and the 14-day limits ------------------------------------------------


def test_it_books_a_window_and_stores_what_was_asked(student, host, image):
    reservation = book(student, host, cpus="2.5", memory_gb="8", gpu_count=1)
    assert reservation.status == Reservation.Status.SCHEDULED
    assert (reservation.cpus, reservation.memory_gb, reservation.gpu_count) == (Decimal("2.5"), 8, 1)
    assert reservation.image == image
    assert reservation.forward_port == student.forward_port
    assert reservation.booked_end == reservation.end
    assert reservation.gpu_indices() == [0]


def test_now_starts_at_the_current_slot_even_though_it_is_in_the_past(student, host):
    reservation = book(student, host, start="now", end="1-day")
    assert reservation.start == SLOT
    assert reservation.end == SLOT + timedelta(days=1)


def test_a_start_flag_counts_from_the_current_slot(student, host):
    reservation = book(student, host, start="1-day", end="1-day")
    assert reservation.start == SLOT + timedelta(days=1)
    assert reservation.end == SLOT + timedelta(days=2)


def test_it_refuses_a_start_in_the_past(student, host):
    with pytest.raises(ValidationError, match="Wrong Input!"):
        book(student, host, start=local(2026, 3, 2, 9, 30))


def test_it_refuses_the_current_slot_unless_asked_as_now(student, host):
    with pytest.raises(ValidationError, match="Wrong Input!"):
        book(student, host, start=SLOT)


def test_the_next_slot_is_the_earliest_explicit_start(student, host):
    assert book(student, host, start=local(2026, 3, 2, 10, 30)).start == local(2026, 3, 2, 10, 30)


def test_a_start_exactly_14_days_ahead_is_allowed_and_one_slot_more_is_not(student, host):
    latest = SLOT + timedelta(days=14)
    assert book(student, host, start=latest).start == latest
    with pytest.raises(ValidationError, match="within 2 weeks"):
        book(student, host, start=latest + timedelta(minutes=30))


def test_an_end_exactly_14_days_after_the_start_is_allowed_and_one_slot_more_is_not(student, host):
    start = local(2026, 3, 3, 0)
    assert book(student, host, start=start, end=start + timedelta(days=14)).end == start + timedelta(days=14)
    other = UserFactory()
    with pytest.raises(ValidationError, match="within 2 weeks from the start"):
        book(other, host, start=start, end=start + timedelta(days=14, minutes=30))


@pytest.mark.parametrize("end_offset", [timedelta(0), timedelta(hours=-1)])
def test_it_refuses_an_end_not_after_the_start(student, host, end_offset):
    start = local(2026, 3, 2, 12)
    with pytest.raises(ValidationError, match="must be after the start"):
        book(student, host, start=start, end=start + end_offset)


def test_it_refuses_times_off_the_grid(student, host):
    with pytest.raises(ValidationError, match="Wrong Input!"):
        book(student, host, start=local(2026, 3, 2, 12, 15))
    with pytest.raises(ValidationError, match="Wrong Input!"):
        book(student, host, start="2026 03 02 12 10")


@pytest.mark.parametrize("flag, days", [("1-day", 1), ("14-day", 14), ("1-week", 7), ("2-week", 14)])
def test_relative_ends_at_their_boundaries(student, host, flag, days):
    reservation = book(student, host, start=local(2026, 3, 3, 0), end=flag)
    assert reservation.end - reservation.start == timedelta(days=days)


@pytest.mark.parametrize("flag", ["0-day", "15-day", "3-week", "1-week 8-day"])
def test_relative_ends_outside_their_range_are_refused(student, host, flag):
    with pytest.raises(ValidationError, match="Wrong Input!"):
        book(student, host, start=local(2026, 3, 3, 0), end=flag)


# Rule 2: minimums and profile maxima -----------------------------------------------------


@pytest.mark.parametrize("field, value", [("cpus", 8.5), ("memory_gb", 33), ("gpu_count", 2)])
def test_it_refuses_more_than_the_profile_maximum_and_names_which(student, host, field, value):
    request = {"cpus": 1, "memory_gb": 1, "gpu_count": 0, field: value}
    with pytest.raises(ValidationError, match=re.escape(OVER_MAXIMUM)) as error:
        book(student, host, **request)
    assert field in error.value.message_dict


def test_the_profile_maximum_itself_is_allowed(student, host):
    reservation = book(student, host, cpus=8, memory_gb=32, gpu_count=1)
    assert reservation.cpus == 8


@pytest.mark.parametrize("field, value", [("cpus", "0.5"), ("memory_gb", 0), ("gpu_count", -1)])
def test_it_refuses_less_than_the_minimum(student, host, field, value):
    request = {"cpus": 1, "memory_gb": 1, "gpu_count": 0, field: value}
    with pytest.raises(ValidationError, match="can not lower than") as error:
        book(student, host, **request)
    assert field in error.value.message_dict


def test_a_custom_profile_overrides_the_default_and_inherits_its_missing_fields(student, host):
    student.capability_profile = CapabilityProfileFactory(cpus=12, gpus=2)
    student.save()
    reservation = book(student, host, cpus=12, memory_gb=32, gpu_count=2)
    assert reservation.gpu_count == 2
    with pytest.raises(ValidationError, match=re.escape(OVER_MAXIMUM)):
        book(UserFactory(capability_profile=student.capability_profile), host, memory_gb=33)


@pytest.mark.parametrize(
    "request_fields, wrong",
    [
        ({"cpus": "two"}, "cpus"),
        ({"cpus": "nan"}, "cpus"),
        ({"cpus": "1.005"}, "cpus"),
        ({"memory_gb": "1.5"}, "memory_gb"),
        ({"memory_gb": None}, "memory_gb"),
        ({"gpu_count": "x"}, "gpu_count"),
        ({"gpu_count": True}, "gpu_count"),
        ({"cpus": "1e30"}, "cpus"),
        ({"memory_gb": "1e999999999"}, "memory_gb"),
        ({"gpu_count": "-1e400"}, "gpu_count"),
    ],
)
def test_non_numbers_are_wrong_input_naming_the_field(student, host, request_fields, wrong):
    request = {"cpus": 1, "memory_gb": 1, "gpu_count": 0, **request_fields}
    with pytest.raises(ValidationError, match="Wrong Input!") as error:
        book(student, host, **request)
    assert wrong in error.value.message_dict


# Rule 3: a user's own reservations -----------------------------------------------------


def test_it_refuses_an_own_overlap_on_any_host(student, host):
    book(student, host, start=local(2026, 3, 2, 12), end=local(2026, 3, 2, 14))
    other_host = HostFactory(gpus=1)
    with pytest.raises(ValidationError, match="overlaps with your previous booking"):
        book(student, other_host, start=local(2026, 3, 2, 13), end=local(2026, 3, 2, 15))


def test_back_to_back_own_reservations_are_allowed(student, host):
    book(student, host, start=local(2026, 3, 2, 12), end=local(2026, 3, 2, 14))
    after = book(student, host, start=local(2026, 3, 2, 14), end=local(2026, 3, 2, 16))
    before = book(student, host, start=local(2026, 3, 2, 11), end=local(2026, 3, 2, 12))
    assert after.pk and before.pk


def test_a_cancelled_reservation_no_longer_blocks_its_owner(student, host):
    first = book(student, host)
    reservation_cancel(reservation=first, now=NOW)
    assert book(student, host).pk != first.pk


# Rule 4: capacity ----------------------------------------------------------------------


def test_the_old_checkers_double_booking_bug_is_gone(host, default_profile, image):
    gpu0, gpu1 = host.gpus.order_by("index")
    ReservationFactory(host=host, start=local(2026, 3, 2, 10), end=local(2026, 3, 2, 11), gpus=[gpu0])
    ReservationFactory(host=host, start=local(2026, 3, 2, 11), end=local(2026, 3, 2, 12), gpus=[gpu1])
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY):
        book(
            UserFactory(),
            host,
            start=local(2026, 3, 2, 10, 30),
            end=local(2026, 3, 2, 12),
            gpu_count=1,
            now=local(2026, 3, 2, 10, 0),
        )


def test_it_rejects_a_gpu_taken_for_part_of_the_window(host, default_profile, image):
    gpu0, gpu1 = host.gpus.order_by("index")
    ReservationFactory(host=host, start=local(2026, 3, 2, 12), end=local(2026, 3, 2, 13), gpus=[gpu0, gpu1])
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY):
        book(UserFactory(), host, start=local(2026, 3, 2, 11), end=local(2026, 3, 2, 12, 30), gpu_count=1)


def test_it_gives_a_gpu_that_is_free_for_the_whole_window(host, default_profile, image):
    gpu0, _ = host.gpus.order_by("index")
    ReservationFactory(host=host, start=local(2026, 3, 2, 12), end=local(2026, 3, 2, 13), gpus=[gpu0])
    reservation = book(
        UserFactory(), host, start=local(2026, 3, 2, 11), end=local(2026, 3, 2, 14), gpu_count=1
    )
    assert reservation.gpu_indices() == [1]


def test_it_prefers_the_least_booked_gpu_and_breaks_ties_by_lowest_index(default_profile, image):
    host = HostFactory(gpus=3)
    gpu0, gpu1, _ = host.gpus.order_by("index")
    ReservationFactory(host=host, start=local(2026, 3, 3, 10), end=local(2026, 3, 3, 18), gpus=[gpu0])
    ReservationFactory(host=host, start=local(2026, 3, 3, 10), end=local(2026, 3, 3, 12), gpus=[gpu1])
    assert book(UserFactory(), host, gpu_count=1).gpu_indices() == [2]
    assert book(UserFactory(), host, gpu_count=1).gpu_indices() == [1]


def test_a_gpu_out_of_service_is_never_allocated(host, default_profile, image):
    host.gpus.filter(index=0).update(is_active=False)
    assert book(UserFactory(), host, gpu_count=1).gpu_indices() == [1]
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY):
        book(UserFactory(), host, gpu_count=1)


def test_cpus_are_checked_at_every_instant_not_summed(image):
    profile = CapabilityProfileFactory(is_default=True, cpus=16, memory_gb=80, gpus=0)
    host = HostFactory(cpus=16, ram_gb=64, swap_gb=16)
    book(
        UserFactory(capability_profile=profile),
        host,
        start=local(2026, 3, 2, 10, 30),
        end=local(2026, 3, 2, 11),
        cpus=8,
    )
    book(
        UserFactory(capability_profile=profile),
        host,
        start=local(2026, 3, 2, 11),
        end=local(2026, 3, 2, 12),
        cpus=8,
    )
    fits = book(UserFactory(), host, start=local(2026, 3, 2, 10, 30), end=local(2026, 3, 2, 12), cpus=8)
    assert fits.pk
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY):
        book(UserFactory(), host, start=local(2026, 3, 2, 10, 30), end=local(2026, 3, 2, 12), cpus=1)
    assert book(UserFactory(), host, start=local(2026, 3, 2, 12), end=local(2026, 3, 2, 13), cpus=8).pk


def test_memory_is_checked_against_ram_plus_swap(image):
    CapabilityProfileFactory(is_default=True, cpus=16, memory_gb=80, gpus=0)
    host = HostFactory(cpus=16, ram_gb=64, swap_gb=16)
    book(UserFactory(), host, memory_gb=60)
    assert book(UserFactory(), host, memory_gb=20).pk
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY):
        book(UserFactory(), host, memory_gb=1)


def test_ended_cancelled_and_failed_reservations_hold_no_capacity(image):
    CapabilityProfileFactory(is_default=True, cpus=16, memory_gb=80, gpus=2)
    host = HostFactory(cpus=16, ram_gb=64, swap_gb=16, gpus=2)
    for status in (Reservation.Status.CANCELLED, Reservation.Status.FAILED):
        ReservationFactory(
            host=host,
            start=local(2026, 3, 2, 12),
            end=local(2026, 3, 2, 13),
            cpus=16,
            memory_gb=80,
            status=status,
        )
    assert book(UserFactory(), host, cpus=16, memory_gb=80, gpu_count=2).pk


# Rule 6: images and the maintenance lock ----------------------------------------------------


def test_it_refuses_an_inactive_image(student, host):
    retired = ImageFactory(is_active=False)
    with pytest.raises(ValidationError, match="Not the available image!"):
        book(student, host, image=retired)
    with pytest.raises(ValidationError, match="Not the available image!"):
        book(student, host, image=retired.reference)


def test_it_refuses_an_unknown_image(student, host):
    with pytest.raises(ValidationError, match="Not the available image!"):
        book(student, host, image="nobody/nothing:latest")


def test_without_an_image_it_takes_the_users_default_then_the_labs(student, host, image):
    own = ImageFactory(reference="lab/pytorch:2")
    student.default_image = own
    student.save()
    assert book(student, host).image == own
    own.is_active = False
    own.save()
    assert book(student, host, start=local(2026, 3, 2, 14)).image == image


def test_it_refuses_a_host_that_is_not_accepting_bookings(student, host):
    host.accepting_bookings = False
    host.save()
    with pytest.raises(ValidationError, match="not accepting bookings"):
        book(student, host)


@pytest.mark.parametrize("unknown", [999999, "no-such-host", None, "12abc", "²", "9" * 40])
def test_it_refuses_an_unknown_host(student, unknown):
    with pytest.raises(ValidationError, match="Unknown host"):
        book(student, unknown)


def test_a_host_may_be_named_by_id_or_name(student, host):
    assert book(student, host.name).host == host
    assert book(student, host.pk, start=local(2026, 3, 2, 14)).host == host


def test_extra_command_defaults_to_the_users_and_must_read_as_arguments(student, host):
    student.default_extra_command = "jupyter lab --port 8888"
    student.save()
    assert book(student, host).extra_command == "jupyter lab --port 8888"
    with pytest.raises(ValidationError, match="Wrong Input!"):
        book(student, host, start=local(2026, 3, 2, 14), extra_command="echo 'unclosed")
    with pytest.raises(ValidationError, match="NUL"):
        book(student, host, start=local(2026, 3, 2, 14), extra_command="echo \x00")


# Rule 7: cancel, release, extend ------------------------------------------------------------


def test_cancel_frees_the_window_and_its_gpus(student, host):
    reservation = book(student, host, gpu_count=1)
    cancelled = reservation_cancel(reservation=reservation, now=NOW)
    assert cancelled.status == Reservation.Status.CANCELLED
    assert cancelled.cancelled_at == NOW
    assert not GpuAllocation.objects.filter(reservation=reservation, active=True).exists()
    assert cancelled.gpu_indices() == [0]


def test_a_started_reservation_not_yet_launched_cannot_be_cancelled_only_released(student, host):
    reservation = book(student, host, start="now", end="1-day")
    with pytest.raises(ValidationError, match="release"):
        reservation_cancel(reservation=reservation, now=NOW)
    assert reservation_release(reservation=reservation, now=NOW).status == Reservation.Status.ENDED


def test_a_running_reservation_cannot_be_cancelled_only_released(student, host):
    reservation = book(student, host, start="now", end="1-day")
    Reservation.objects.filter(pk=reservation.pk).update(status=Reservation.Status.RUNNING)
    with pytest.raises(ValidationError, match="release"):
        reservation_cancel(reservation=reservation, now=NOW)


def test_release_ends_now_and_frees_the_rest_of_the_window(student, host, default_profile):
    default_profile.gpus = 2
    default_profile.save()
    reservation = book(student, host, start="now", end="1-day", gpu_count=2)
    Reservation.objects.filter(pk=reservation.pk).update(status=Reservation.Status.RUNNING)
    later = NOW + timedelta(hours=2)
    released = reservation_release(reservation=reservation, now=later)
    assert (released.end, released.released_at, released.ended_at) == (later, later, later)
    assert released.booked_end == SLOT + timedelta(days=1)
    # No longer live: the scheduler removes its container on the next tick.
    assert released.status == Reservation.Status.ENDED
    assert set(released.allocations.values_list("end", flat=True)) == {later}
    other = book(UserFactory(), host, start=local(2026, 3, 2, 12, 30), end="1-day", gpu_count=2, now=later)
    assert other.gpu_indices() == [0, 1]


def test_release_frees_the_current_slot_for_a_now_booking(student, host, default_profile):
    reservation = book(student, host, start="now", end="1-day", gpu_count=1)
    Reservation.objects.filter(pk=reservation.pk).update(status=Reservation.Status.RUNNING)
    released_at = NOW + timedelta(minutes=7)
    reservation_release(reservation=reservation, now=released_at)
    moment = released_at + timedelta(minutes=1)
    again = book(student, host, start="now", end="1-day", gpu_count=1, now=moment)
    assert again.start == SLOT
    another = book(UserFactory(), host, start="now", end="1-day", gpu_count=1, now=moment)
    assert sorted(again.gpu_indices() + another.gpu_indices()) == [0, 1]


def test_a_now_booking_holds_its_gpus_from_the_moment_it_was_made(student, host):
    reservation = book(student, host, start="now", end="1-day", gpu_count=1)
    assert reservation.start == SLOT
    assert list(reservation.allocations.values_list("start", flat=True)) == [NOW]


def test_release_of_a_never_launched_reservation_ends_it_at_once(student, host):
    reservation = book(student, host, start="now", end="1-day")
    released = reservation_release(reservation=reservation, now=NOW)
    assert released.status == Reservation.Status.ENDED
    assert released.ended_at == NOW


def test_a_future_reservation_cannot_be_released(student, host):
    with pytest.raises(ValidationError, match="cancel it instead"):
        reservation_release(reservation=book(student, host), now=NOW)


def test_extend_keeps_the_same_gpus_and_moves_the_end(student, host):
    reservation = book(student, host, gpu_count=1)
    extended = reservation_extend(reservation=reservation, end=local(2026, 3, 2, 18), now=NOW)
    assert extended.end == extended.booked_end == local(2026, 3, 2, 18)
    assert list(extended.allocations.values_list("end", flat=True)) == [local(2026, 3, 2, 18)]
    assert extended.gpu_indices() == reservation.gpu_indices()


def test_extend_takes_a_relative_end_from_the_start(student, host):
    reservation = book(student, host)
    assert reservation_extend(
        reservation=reservation, end="2-day", now=NOW
    ).end == reservation.start + timedelta(days=2)


def test_extend_is_refused_when_its_gpu_is_booked_later(student, host, default_profile):
    reservation = book(student, host, gpu_count=1)
    gpu = reservation.allocations.get().gpu
    ReservationFactory(host=host, start=local(2026, 3, 2, 14), end=local(2026, 3, 2, 15), gpus=[gpu])
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY):
        reservation_extend(reservation=reservation, end=local(2026, 3, 2, 16), now=NOW)


def test_extend_is_refused_into_an_own_reservation_and_past_14_days(student, host):
    reservation = book(student, host)
    book(student, host, start=local(2026, 3, 2, 15), end=local(2026, 3, 2, 16))
    with pytest.raises(ValidationError, match="overlaps"):
        reservation_extend(reservation=reservation, end=local(2026, 3, 2, 16), now=NOW)
    with pytest.raises(ValidationError, match="within 2 weeks"):
        reservation_extend(reservation=reservation, end=reservation.start + timedelta(days=15), now=NOW)


def test_extend_must_move_the_end_later(student, host):
    reservation = book(student, host)
    with pytest.raises(ValidationError, match="after the current end"):
        reservation_extend(reservation=reservation, end=reservation.end, now=NOW)


def test_a_cancelled_reservation_cannot_be_extended(student, host):
    reservation = reservation_cancel(reservation=book(student, host), now=NOW)
    with pytest.raises(ValidationError, match="can be extended"):
        reservation_extend(reservation=reservation, end=local(2026, 3, 2, 18), now=NOW)


@pytest.mark.parametrize("reference", ["²", "9" * 40, ""])
def test_an_image_named_by_odd_text_is_not_available_not_a_crash(student, host, reference):
    with pytest.raises(ValidationError, match="Not the available image!"):
        book(student, host, image=reference or " ")


@pytest.mark.parametrize(
    "start, end",
    [
        (local(2026, 3, 3, 0), "9" * 5000 + "-day"),
        (local(2026, 3, 3, 0), local(9999, 12, 31, 23, 30)),
        ("9999 12 31 23 30", "2-week"),
        ("0001 01 01 00 00", "1-day"),
    ],
)
def test_times_at_the_ends_of_the_calendar_are_wrong_input_not_a_crash(student, host, start, end):
    with pytest.raises(ValidationError, match="Wrong Input!"):
        book(student, host, start=start, end=end)


# The forward port ---------------------------------------------------------------------------


def test_a_port_change_carries_the_users_upcoming_reservations_along(student, host, settings):
    upcoming = book(student, host)
    new_port = settings.PORT_RANGE.stop - 1
    forward_port_change(user=student, port=new_port, now=NOW)
    upcoming.refresh_from_db()
    assert (student.forward_port, upcoming.forward_port) == (new_port, new_port)


def test_a_port_change_waits_while_the_users_container_runs(student, host, settings):
    running = book(student, host, start="now", end="1-day")
    Reservation.objects.filter(pk=running.pk).update(status=Reservation.Status.RUNNING)
    with pytest.raises(ValidationError, match="release it before"):
        forward_port_change(user=student, port=settings.PORT_RANGE.stop - 1, now=NOW)


def test_a_port_a_new_account_gets_is_never_one_a_live_reservation_uses(student, host, settings):
    old_port = student.forward_port
    book(student, host)
    forward_port_change(user=student, port=settings.PORT_RANGE.stop - 1, now=NOW)
    newcomer = UserFactory()
    assert newcomer.forward_port == old_port  # free again: the booking moved with its owner
    assert not Reservation.objects.filter(forward_port=old_port).exists()


def test_a_staff_members_first_booking_assigns_a_forward_port_from_the_free_ones(
    host, image, default_profile, settings
):
    settings.PORT_RANGE = range(10001, 10011)
    UserFactory()  # holds 10001
    staff = UserFactory(is_staff=True)
    assert staff.forward_port is None
    reservation = book(staff, host)
    staff.refresh_from_db()
    assert reservation.forward_port == staff.forward_port
    assert staff.forward_port in range(10002, 10011)
    assert book(staff, host, start=local(2026, 3, 3, 12)).forward_port == staff.forward_port


def test_an_over_maximum_refusal_names_the_profile_limit_in_words(student, host, default_profile):
    default_profile.memory_gb = 2
    default_profile.save()
    with pytest.raises(ValidationError) as error:
        book(student, host, memory_gb=4)
    assert error.value.message_dict["memory_gb"] == [
        "Over the maximum required. Your profile allows at most 2 GiB of memory."
    ]


def test_gpus_on_a_host_without_gpus_are_refused_naming_the_host(student, default_profile):
    vm = HostFactory(name="vm", gpus=0)
    with pytest.raises(ValidationError) as error:
        book(student, vm, gpu_count=1)
    assert error.value.message_dict["gpu_count"] == ["Over the maximum required. vm has 0 GPUs."]
