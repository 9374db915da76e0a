"""The waitlist: a booking that does not fit waits, holding nothing, and the tick books it
through the booking service when capacity frees up, lighter users first."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django_q.models import Schedule

from accounts.grant_services import limit_request_approve, limit_request_create
from accounts.models import LimitKind, Notification, NotificationKind
from accounts.notification_services import notifications_send_email
from bookings.capacity import availability
from bookings.models import GpuAllocation, Reservation, WaitlistEntry
from bookings.services import NOT_ENOUGH_CAPACITY, reservation_cancel, reservation_create
from bookings.tasks import book_waiting_requests
from bookings.waitlist_services import (
    MAX_WAITING_PER_USER,
    WINDOW_STARTS_NOW,
    waitlist_book_due,
    waitlist_join,
    waitlist_withdraw,
)
from containers.schedules import schedules_ensure
from tests.factories import HostFactory, ReservationFactory, UserFactory, local

pytestmark = pytest.mark.django_db

NOW = local(2026, 3, 2, 10, 10)
NOON = local(2026, 3, 2, 12)
Status = WaitlistEntry.Status


@pytest.fixture
def one_gpu(db):
    return HostFactory(name="gpu-one", cpus=16, ram_gb=64, swap_gb=16, gpus=1)


@pytest.fixture
def rival(default_profile, image):
    return UserFactory(username="rival")


def hold_the_gpu(host, *, start=NOON, end=None, user=None):
    """Someone else's booking of the host's only GPU over [start, end)."""
    return ReservationFactory(
        user=user or UserFactory(),
        host=host,
        start=start,
        end=end or start + timedelta(hours=4),
        gpus=list(host.gpus.all()),
    )


def join(user, host, *, start=NOON, end=None, now=NOW, **kwargs):
    return waitlist_join(
        user=user,
        host=host,
        start=start,
        end=end or start + timedelta(hours=2),
        cpus=kwargs.pop("cpus", 1),
        memory_gb=kwargs.pop("memory_gb", 4),
        gpu_count=kwargs.pop("gpu_count", 1),
        now=now,
        **kwargs,
    )


def test_a_refused_booking_can_wait_for_its_window_and_holds_nothing(student, one_gpu):
    blocker = hold_the_gpu(one_gpu)
    with pytest.raises(ValidationError, match=NOT_ENOUGH_CAPACITY[:30]):
        reservation_create(
            user=student,
            host=one_gpu,
            start=NOON,
            end=NOON + timedelta(hours=2),
            cpus=1,
            memory_gb=4,
            gpu_count=1,
            now=NOW,
        )

    entry = join(student, one_gpu)

    assert (entry.status, entry.mode) == (Status.WAITING, WaitlistEntry.Mode.WINDOW)
    assert entry.earliest_start == entry.latest_start == NOON and entry.duration_minutes == 120
    assert not Reservation.objects.filter(user=student).exists()
    assert not GpuAllocation.objects.exclude(reservation=blocker).exists()
    # Nothing is held: once the blocker is gone, anyone can book the whole window.
    reservation_cancel(reservation=blocker, now=NOW)
    free = availability(host=one_gpu, start=NOON, end=NOON + timedelta(hours=2))
    assert free.gpus == 1 and free.cpus == 16


def test_the_tick_books_a_waiting_window_once_a_cancel_frees_it_and_tells_the_user(student, one_gpu):
    student.email = "student@lab.example"
    student.save()
    blocker = hold_the_gpu(one_gpu)
    entry = join(student, one_gpu)
    assert str(waitlist_book_due(now=NOW)) == "booked 0, expired 0, still waiting 1"

    reservation_cancel(reservation=blocker, now=NOW)
    report = waitlist_book_due(now=NOW + timedelta(minutes=1))

    entry.refresh_from_db()
    assert entry.status == Status.BOOKED and report.booked == [entry.reservation_id]
    booked = entry.reservation
    assert (booked.start, booked.end, booked.gpu_count, booked.user) == (
        NOON,
        NOON + timedelta(hours=2),
        1,
        student,
    )
    assert booked.gpu_indices() == [0]
    notice = Notification.objects.get(user=student, kind=NotificationKind.WAITLIST_BOOKED)
    assert "gpu-one" in notice.title and notice.email == Notification.Email.PENDING
    # A second tick books nothing twice and tells nothing twice.
    waitlist_book_due(now=NOW + timedelta(minutes=2))
    assert Reservation.objects.filter(user=student).count() == 1
    assert Notification.objects.filter(user=student).count() == 1


def test_the_first_window_after_a_start_is_booked_where_it_fits(student, one_gpu):
    hold_the_gpu(one_gpu, end=NOON + timedelta(hours=3))
    entry = join(student, one_gpu, mode=WaitlistEntry.Mode.FIRST_AFTER, latest_start=local(2026, 3, 3, 12))

    waitlist_book_due(now=NOW)

    entry.refresh_from_db()
    assert entry.status == Status.BOOKED
    assert (entry.reservation.start, entry.reservation.end) == (
        NOON + timedelta(hours=3),
        NOON + timedelta(hours=5),
    )


def test_a_window_found_at_this_moment_is_booked_now(student, one_gpu):
    blocker = hold_the_gpu(one_gpu, start=local(2026, 3, 2, 10), end=local(2026, 3, 2, 14))
    entry = join(
        student, one_gpu, start="now", end="1-day", mode=WaitlistEntry.Mode.FIRST_AFTER, latest_start="1-day"
    )
    # Released at 10:40: the request is booked from the current slot.
    blocker.status = Reservation.Status.ENDED
    blocker.end = local(2026, 3, 2, 10, 40)
    blocker.save()
    blocker.allocations.update(end=blocker.end)

    waitlist_book_due(now=local(2026, 3, 2, 10, 41))

    entry.refresh_from_db()
    assert entry.status == Status.BOOKED
    assert (entry.reservation.start, entry.reservation.end) == (
        local(2026, 3, 2, 10, 30),
        local(2026, 3, 3, 10, 30),
    )


def test_between_two_waiters_the_lighter_user_is_booked_first(student, rival, one_gpu):
    blocker = hold_the_gpu(one_gpu)
    first_to_ask = join(rival, one_gpu, now=NOW)
    lighter = join(student, one_gpu, now=NOW + timedelta(minutes=1))
    reservation_cancel(reservation=blocker, now=NOW)

    waitlist_book_due(now=NOW + timedelta(minutes=2), usage={rival.pk: 30.0, student.pk: 2.0})

    lighter.refresh_from_db()
    first_to_ask.refresh_from_db()
    assert lighter.status == Status.BOOKED
    assert first_to_ask.status == Status.WAITING
    assert NOT_ENOUGH_CAPACITY in first_to_ask.status_message or first_to_ask.status_message == ""


def test_with_equal_usage_the_older_request_is_booked_first(student, rival, one_gpu):
    blocker = hold_the_gpu(one_gpu)
    older = join(rival, one_gpu, now=NOW)
    newer = join(student, one_gpu, now=NOW + timedelta(minutes=1))
    reservation_cancel(reservation=blocker, now=NOW)

    waitlist_book_due(now=NOW + timedelta(minutes=2))

    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.status, newer.status) == (Status.BOOKED, Status.WAITING)


def test_a_request_expires_at_its_latest_start_and_the_user_is_told(student, one_gpu):
    hold_the_gpu(one_gpu)
    entry = join(student, one_gpu)

    report = waitlist_book_due(now=NOON)

    entry.refresh_from_db()
    assert report.expired == 1 and entry.status == Status.EXPIRED and entry.decided_at == NOON
    assert Notification.objects.filter(user=student, kind=NotificationKind.WAITLIST_EXPIRED).count() == 1
    assert not Reservation.objects.filter(user=student).exists()


def test_a_withdrawn_request_is_never_booked(student, one_gpu):
    blocker = hold_the_gpu(one_gpu)
    entry = join(student, one_gpu)

    waitlist_withdraw(entry=entry, now=NOW)
    reservation_cancel(reservation=blocker, now=NOW)
    waitlist_book_due(now=NOW + timedelta(minutes=1))

    entry.refresh_from_db()
    assert entry.status == Status.WITHDRAWN and entry.reservation is None
    assert not Reservation.objects.filter(user=student).exists()
    with pytest.raises(ValidationError, match="Only a waiting request"):
        waitlist_withdraw(entry=entry, now=NOW)


def test_a_booking_rule_that_still_refuses_keeps_the_request_waiting_with_the_reason(student, one_gpu):
    blocker = hold_the_gpu(one_gpu)
    entry = join(student, one_gpu)
    # The student books something else overlapping meanwhile: rule 3 refuses the waiting one.
    other = HostFactory(name="cpu-only", gpus=0)
    reservation_create(
        user=student,
        host=other,
        start=NOON,
        end=NOON + timedelta(hours=1),
        cpus=1,
        memory_gb=1,
        gpu_count=0,
        now=NOW,
    )
    reservation_cancel(reservation=blocker, now=NOW)

    waitlist_book_due(now=NOW + timedelta(minutes=1))

    entry.refresh_from_db()
    assert entry.status == Status.WAITING


def test_any_host_waits_on_every_host_open_to_the_user(student, one_gpu):
    second = HostFactory(name="gpu-two", gpus=1)
    hold_the_gpu(one_gpu)
    blocker = hold_the_gpu(second)
    entry = join(student, None)
    assert entry.host is None
    reservation_cancel(reservation=blocker, now=NOW)

    waitlist_book_due(now=NOW + timedelta(minutes=1))

    entry.refresh_from_db()
    assert entry.status == Status.BOOKED and entry.reservation.host == second


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"end": NOON - timedelta(hours=1)}, "end", "The end time must be after the start time."),
        ({"start": local(2026, 3, 2, 9)}, "start", "must not be in the past"),
        (
            {"mode": "first_after", "latest_start": local(2026, 3, 2, 9)},
            "latest_start",
            "The latest start must be in the future.",
        ),
        (
            {"mode": "first_after", "latest_start": local(2026, 3, 2, 11)},
            "latest_start",
            "must not be before the start",
        ),
        (
            {"mode": "first_after", "latest_start": local(2026, 3, 20, 11)},
            "latest_start",
            "within 2 weeks",
        ),
        ({"start": "now", "end": "1-day"}, "start", WINDOW_STARTS_NOW),
        ({"gpu_count": 3}, "gpu_count", "Over the maximum required."),
        ({"gpu_count": -3}, "gpu_count", "can not lower than 0"),
        ({"mode": "sometime"}, "mode", "Choose a mode"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_is_stored(student, one_gpu, kwargs, field, message):
    with pytest.raises(ValidationError) as error:
        join(student, one_gpu, **kwargs)
    assert any(message in text for text in error.value.message_dict[field])
    assert not WaitlistEntry.objects.exists()


def test_a_user_waits_for_a_bounded_number_of_requests(student, one_gpu):
    for hours in range(MAX_WAITING_PER_USER):
        join(student, one_gpu, start=NOON + timedelta(hours=hours))
    with pytest.raises(ValidationError, match="withdraw one first"):
        join(student, one_gpu, start=local(2026, 3, 3, 12))
    assert WaitlistEntry.objects.count() == MAX_WAITING_PER_USER


def test_the_tick_task_runs_a_pass_and_its_schedule_exists(student, one_gpu):
    hold_the_gpu(one_gpu)
    join(student, one_gpu)
    assert "still waiting 1" in book_waiting_requests(now=NOW)
    schedules_ensure()
    assert Schedule.objects.filter(func="bookings.tasks.book_waiting_requests", minutes=1).exists()


def test_a_cancel_and_a_release_wake_the_waitlist(student, one_gpu, monkeypatch):
    queued = []
    monkeypatch.setattr("bookings.services.queue_task", lambda name, **kwargs: queued.append(name))
    reservation = reservation_create(
        user=student, host=one_gpu, start=NOON, end=NOON + timedelta(hours=1), cpus=1, memory_gb=1, now=NOW
    )
    reservation_cancel(reservation=reservation, now=NOW)
    assert "bookings.tasks.book_waiting_requests" in queued


def test_the_tick_orders_waiters_by_fair_share_with_a_granted_boost(student, rival, one_gpu):
    # The student used more GPU time than the rival, but has a boost (usage counts 0 times).
    for user, hours in ((student, 20), (rival, 2)):
        ReservationFactory(
            user=user,
            host=one_gpu,
            start=NOW - timedelta(days=1, hours=hours),
            end=NOW - timedelta(days=1),
            status=Reservation.Status.ENDED,
        )
    maintainer = UserFactory(username="maintainer", is_staff=True)
    boost = limit_request_create(
        user=student, kind=LimitKind.BOOST, until=date(2026, 3, 10), reason="Deadline.", now=NOW
    )
    made = limit_request_approve(request=boost, by=maintainer, now=NOW)
    made.usage_factor = 0
    made.save()
    blocker = hold_the_gpu(one_gpu)
    rivals = join(rival, one_gpu, now=NOW)
    students = join(student, one_gpu, now=NOW + timedelta(minutes=1))
    reservation_cancel(reservation=blocker, now=NOW)

    book_waiting_requests(now=NOW + timedelta(minutes=2))

    students.refresh_from_db()
    rivals.refresh_from_db()
    assert (students.status, rivals.status) == (Status.BOOKED, Status.WAITING)


def test_the_booked_notice_goes_out_by_e_mail_on_the_notify_tick(student, one_gpu, mailoutbox):
    student.email = "student@lab.example"
    student.save()
    blocker = hold_the_gpu(one_gpu)
    join(student, one_gpu)
    reservation_cancel(reservation=blocker, now=NOW)
    waitlist_book_due(now=NOW + timedelta(minutes=1))

    assert notifications_send_email(now=NOW + timedelta(minutes=2)) == 1
    [mail] = mailoutbox
    assert mail.to == ["student@lab.example"] and "is booked" in mail.subject


def test_a_deactivated_accounts_request_is_not_booked(student, one_gpu):
    blocker = hold_the_gpu(one_gpu)
    entry = join(student, one_gpu)
    student.is_active = False
    student.save()
    reservation_cancel(reservation=blocker, now=NOW)

    waitlist_book_due(now=NOW + timedelta(minutes=1))

    entry.refresh_from_db()
    assert entry.status == Status.WAITING and not Reservation.objects.filter(user=student).exists()


def test_a_first_after_request_over_its_budget_now_is_booked_when_its_hours_come_back(
    student, one_gpu, default_profile
):
    default_profile.gpu_hours_per_week = Decimal(10)
    default_profile.save()
    # 8 GPU-hours used this morning: 4 more now would make 12 in one week.
    ReservationFactory(
        user=student,
        host=one_gpu,
        start=local(2026, 3, 2, 1),
        end=local(2026, 3, 2, 9),
        status=Reservation.Status.ENDED,
        gpus=list(one_gpu.gpus.all()),
    )
    entry = join(
        student,
        one_gpu,
        end=NOON + timedelta(hours=4),
        mode=WaitlistEntry.Mode.FIRST_AFTER,
        latest_start="8-day",
    )

    waitlist_book_due(now=NOW)

    entry.refresh_from_db()
    assert entry.status == Status.BOOKED
    booked = entry.reservation
    # The first window whose 7 days back hold at most 10 GPU-hours: 6 of the morning's 8, and 4.
    assert booked.start == local(2026, 3, 8, 23)
    assert booked.end - booked.start == timedelta(hours=4)


def test_a_window_request_over_its_budget_keeps_waiting_with_the_reason(student, one_gpu, default_profile):
    default_profile.gpu_hours_per_week = Decimal(3)
    default_profile.save()
    entry = join(student, one_gpu, end=NOON + timedelta(hours=4))

    waitlist_book_due(now=NOW)

    entry.refresh_from_db()
    assert entry.status == Status.WAITING and "GPU-hour budget" in entry.status_message


def test_a_refusal_naming_a_field_keeps_the_request_waiting_with_the_reason(student, one_gpu, image):
    entry = join(student, one_gpu, image=image)
    image.is_active = False
    image.save()

    waitlist_book_due(now=NOW)

    entry.refresh_from_db()
    assert entry.status == Status.WAITING and "Not the available image!" in entry.status_message
