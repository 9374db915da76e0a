"""Many starts at once: one tick launches side by side on a bounded pool, and the folders of
what starts soon are made before the start."""

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from bookings.models import Reservation
from containers.fake_runtime import FakeRuntime
from containers.lifecycle import reconcile
from containers.specs import ContainerSpec, ContainerState
from containers.volumes import state_root
from tests.factories import ImageFactory, ReservationFactory, UserFactory

LAUNCH_S = 0.2


class SlowFakeRuntime(FakeRuntime):
    """A fake engine whose launches take a while, and which counts how many overlap."""

    running_now = 0
    most_at_once = 0
    _count_lock = threading.Lock()

    def run(self, spec: ContainerSpec) -> ContainerState:
        cls = type(self)
        with cls._count_lock:
            cls.running_now += 1
            cls.most_at_once = max(cls.most_at_once, cls.running_now)
        try:
            time.sleep(LAUNCH_S)
            return super().run(spec)
        finally:
            with cls._count_lock:
                cls.running_now -= 1


@pytest.fixture
def slow_runtime(settings):
    settings.CONTAINER_RUNTIME = "tests.containers.test_parallel_launch.SlowFakeRuntime"
    settings.AGENT_LAUNCH_WORKERS = 4
    FakeRuntime.reset()
    SlowFakeRuntime.running_now = SlowFakeRuntime.most_at_once = 0
    yield SlowFakeRuntime
    FakeRuntime.reset()


@pytest.mark.django_db(transaction=True)
def test_one_tick_launches_due_reservations_side_by_side_on_a_bounded_pool(
    engine_host, slow_runtime, default_profile
):
    now = timezone.now()
    image = ImageFactory(reference="lab/aivc-server:latest")
    due = [
        ReservationFactory(
            user=UserFactory(),
            host=engine_host,
            image=image,
            start=now - timedelta(minutes=1),
            end=now + timedelta(hours=1),
        )
        for _ in range(12)
    ]

    report = reconcile(wake=False)

    assert sorted(report.started) == sorted(r.pk for r in due)
    assert Reservation.objects.filter(status=Reservation.Status.RUNNING).count() == 12
    assert slow_runtime.most_at_once == 4  # in parallel, never more than the pool


def test_the_folders_and_host_keys_of_a_reservation_starting_soon_are_made_before_its_start(
    engine_host, fake_runtime, default_profile
):
    now = timezone.now()
    soon = ReservationFactory(
        user=UserFactory(username="early1"),
        host=engine_host,
        start=now + timedelta(minutes=5),
        end=now + timedelta(hours=1),
    )

    reconcile(wake=False)

    soon.refresh_from_db()
    assert soon.status == Reservation.Status.SCHEDULED
    # Host keys live in the portal's own state folder for the user.
    assert list((state_root(engine_host) / "early1").rglob("ssh_host_ed25519_key"))
    assert (Path(engine_host.work_root) / "early1").is_dir()


class SlowRemovalRuntime(FakeRuntime):
    """A fake engine whose removals take a while, and which counts how many overlap."""

    removing_now = 0
    most_at_once = 0
    _count_lock = threading.Lock()

    def remove(self, container_id: str) -> None:
        cls = type(self)
        with cls._count_lock:
            cls.removing_now += 1
            cls.most_at_once = max(cls.most_at_once, cls.removing_now)
        try:
            time.sleep(LAUNCH_S)
            super().remove(container_id)
        finally:
            with cls._count_lock:
                cls.removing_now -= 1


@pytest.mark.django_db(transaction=True)
def test_one_tick_removes_ended_containers_side_by_side_on_the_pool(engine_host, settings, default_profile):
    settings.CONTAINER_RUNTIME = "tests.containers.test_parallel_launch.SlowRemovalRuntime"
    settings.AGENT_LAUNCH_WORKERS = 4
    FakeRuntime.reset()
    SlowRemovalRuntime.removing_now = SlowRemovalRuntime.most_at_once = 0
    now = timezone.now()
    image = ImageFactory(reference="lab/aivc-server:latest")
    ending = [
        ReservationFactory(
            user=UserFactory(),
            host=engine_host,
            image=image,
            start=now - timedelta(minutes=1),
            end=now + timedelta(hours=1),
        )
        for _ in range(12)
    ]
    reconcile(wake=False)
    Reservation.objects.filter(pk__in=[r.pk for r in ending]).update(
        end=timezone.now() - timedelta(seconds=1)
    )
    try:
        report = reconcile(wake=False)
    finally:
        FakeRuntime.reset()
    assert len(report.removed) == 12
    assert Reservation.objects.filter(status=Reservation.Status.ENDED).count() == 12
    assert SlowRemovalRuntime.most_at_once == 4  # in parallel, never more than the pool
