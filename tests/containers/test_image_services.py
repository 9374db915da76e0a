"""Images ready before the start: the agent checks the engine holds the image and pulls
it if not, recording the state; a failed pull tells maintainers once, in the engine's
words, and the student in plain ones (tests/bookings/test_live_status.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bookings.models import Reservation
from containers.fake_runtime import FakeRuntime
from containers.image_services import image_prepare
from containers.models import ContainerEvent, ImagePresence
from containers.runtime import EngineUnavailable, get_runtime
from containers.selectors import image_presences_for
from containers.tasks import prepare_image, reconcile
from tests.factories import HostFactory, ImageFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.django_db
State = ImagePresence.State
Status = Reservation.Status


@pytest.fixture
def lab_host(db):
    return HostFactory(name="gpu-07")


@pytest.fixture
def lab_image(db):
    return ImageFactory(reference="aivc/lab:cuda12.4")


def test_an_image_the_engine_holds_is_recorded_present(fake_runtime, lab_host, lab_image):
    presence = image_prepare(
        host=lab_host, image=lab_image, runtime=get_runtime(lab_host), now=timezone.now()
    )
    assert presence.state == State.PRESENT
    assert FakeRuntime.engine_for(lab_host).pulls == []


def test_a_missing_image_is_pulled_ahead_of_the_start(fake_runtime, lab_host, lab_image):
    engine = FakeRuntime.engine_for(lab_host)
    engine.images, engine.pullable = set(), {lab_image.reference}
    presence = image_prepare(
        host=lab_host, image=lab_image, runtime=get_runtime(lab_host), now=timezone.now()
    )
    assert presence.state == State.PRESENT
    assert engine.pulls == [lab_image.reference]
    assert lab_image.reference in engine.images


def test_an_unpullable_image_fails_with_one_event_for_maintainers(fake_runtime, lab_host, lab_image):
    engine = FakeRuntime.engine_for(lab_host)
    engine.images = set()
    for _ in range(2):
        presence = image_prepare(
            host=lab_host, image=lab_image, runtime=get_runtime(lab_host), now=timezone.now()
        )
    assert presence.state == State.FAILED
    assert "pull access denied" in presence.message
    events = ContainerEvent.objects.filter(sign="ImagePullFailed")
    assert events.count() == 1
    assert events.get().level == ContainerEvent.Level.ERROR
    assert "pull access denied" in events.get().message


def test_an_engine_that_does_not_answer_changes_nothing(fake_runtime, lab_host, lab_image):
    FakeRuntime.engine_for(lab_host).reachable = False
    with pytest.raises(EngineUnavailable):
        image_prepare(host=lab_host, image=lab_image, runtime=get_runtime(lab_host), now=timezone.now())
    assert not ImagePresence.objects.filter(state=State.PRESENT).exists()


def test_presences_are_read_per_reservation_in_one_query(lab_host, lab_image, django_assert_num_queries):
    checked = ReservationFactory(host=lab_host, image=lab_image)
    unchecked = ReservationFactory(host=lab_host)
    ImagePresence.objects.create(host=lab_host, image=lab_image, state=State.PULLING)
    with django_assert_num_queries(1):
        presences = image_presences_for(reservations=[checked, unchecked])
    assert presences[checked.pk].state == State.PULLING
    assert unchecked.pk not in presences


@pytest.mark.docker
def test_the_docker_runtime_sees_a_local_image_and_reports_a_failed_pull(
    engine_host, docker_scope, test_image, docker_client
):
    runtime = get_runtime(engine_host)
    assert runtime.image_present(test_image.reference)
    missing = ImageFactory(reference="aivc-test/never-built:nope")
    assert not runtime.image_present(missing.reference)
    presence = image_prepare(host=engine_host, image=missing, runtime=runtime, now=timezone.now())
    assert presence.state == State.FAILED
    assert presence.message


@pytest.fixture
def now_booking(fake_runtime, engine_host, lab_image, default_profile):
    from bookings.services import reservation_create

    user = UserFactory(ssh_public_keys="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk s@laptop")
    return reservation_create(
        user=user, host=engine_host, start="now", end="1-day", cpus=1, memory_gb=1, image=lab_image
    )


def test_a_now_booking_waits_for_its_image_to_be_pulled_then_runs(now_booking, engine_host, lab_image):
    engine = FakeRuntime.engine_for(engine_host)
    engine.images, engine.pullable = set(), {lab_image.reference}
    reconcile(host_id=engine_host.pk, wake=False)
    now_booking.refresh_from_db()
    assert now_booking.status == Status.STARTING
    assert ImagePresence.objects.get(host=engine_host, image=lab_image).state == State.PULLING

    assert "present" in prepare_image(now_booking.pk)
    reconcile(host_id=engine_host.pk, wake=False)
    now_booking.refresh_from_db()
    assert now_booking.status == Status.RUNNING


def test_a_now_booking_whose_image_cannot_be_pulled_fails_plainly(now_booking, engine_host, lab_image):
    FakeRuntime.engine_for(engine_host).images = set()
    assert "failed" in prepare_image(now_booking.pk)
    reconcile(host_id=engine_host.pk, wake=False)
    now_booking.refresh_from_db()
    assert now_booking.status == Status.FAILED
    assert ContainerEvent.objects.filter(sign="ImageMissing", reservation=now_booking).exists()


def test_the_booking_path_queues_the_image_check(
    fake_runtime, engine_host, lab_image, default_profile, monkeypatch
):
    from bookings import services as booking_services

    queued = []
    monkeypatch.setattr(
        booking_services, "queue_host_task", lambda name, host, **kwargs: queued.append((name, kwargs))
    )
    booking = booking_services.reservation_create(
        user=UserFactory(), host=engine_host, start="now", end="1-day", cpus=1, memory_gb=1, image=lab_image
    )
    assert ("containers.tasks.prepare_image", {"reservation_id": booking.pk}) in queued


def _image_checks_queued(*, host, image, monkeypatch) -> int:
    from bookings import services as booking_services

    queued = []
    monkeypatch.setattr(booking_services, "queue_host_task", lambda name, host, **kwargs: queued.append(name))
    booking_services.reservation_create(
        user=UserFactory(), host=host, start="now", end="1-day", cpus=1, memory_gb=1, image=image
    )
    return queued.count("containers.tasks.prepare_image")


def test_a_booking_skips_the_check_of_an_image_the_agent_found_minutes_ago(
    fake_runtime, engine_host, lab_image, default_profile, monkeypatch
):
    ImagePresence.objects.create(
        host=engine_host, image=lab_image, state=ImagePresence.State.PRESENT, checked_at=timezone.now()
    )
    assert _image_checks_queued(host=engine_host, image=lab_image, monkeypatch=monkeypatch) == 0


@pytest.mark.parametrize(
    "state, age",
    [
        (ImagePresence.State.PRESENT, timedelta(hours=2)),  # too long ago to trust
        # A recent failure refuses the booking (tests/bookings/test_image_checks.py); an old
        # one is checked again.
        (ImagePresence.State.FAILED, timedelta(hours=2)),
        (ImagePresence.State.PULLING, timedelta(0)),
        (ImagePresence.State.MISSING, timedelta(0)),
    ],
)
def test_a_booking_queues_the_check_unless_the_image_was_found_recently(
    fake_runtime, engine_host, lab_image, default_profile, monkeypatch, state, age
):
    ImagePresence.objects.create(
        host=engine_host, image=lab_image, state=state, checked_at=timezone.now() - age
    )
    assert _image_checks_queued(host=engine_host, image=lab_image, monkeypatch=monkeypatch) == 1


def test_an_image_present_on_another_host_is_still_checked_on_this_one(
    fake_runtime, engine_host, lab_image, default_profile, monkeypatch
):
    ImagePresence.objects.create(
        host=HostFactory(), image=lab_image, state=ImagePresence.State.PRESENT, checked_at=timezone.now()
    )
    assert _image_checks_queued(host=engine_host, image=lab_image, monkeypatch=monkeypatch) == 1


def test_a_reservation_of_an_image_later_marked_legacy_fails_instead_of_starting(
    now_booking, engine_host, lab_image
):
    lab_image.login = lab_image.Login.PASSWORD
    lab_image.save()
    reconcile(host_id=engine_host.pk, wake=False)
    now_booking.refresh_from_db()
    assert now_booking.status == Status.FAILED
    assert FakeRuntime.engine_for(engine_host).runs == []
    assert ContainerEvent.objects.filter(sign="ImageNeedsPassword", reservation=now_booking).exists()
