"""The Docker runtime against a real engine (deploy/test-engine/setup.sh), read back with
`docker inspect`."""

import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import reservation_release
from containers.models import ContainerEvent
from containers.specs import GIB, LABEL_MANAGED, LABEL_RESERVATION
from containers.tasks import prepare_image, reconcile
from tests.containers.helpers import SETUP_ENGINES, destructive_engine_test
from tests.factories import ReservationFactory, UserFactory
from tests.images import TEST_IMAGE

pytestmark = pytest.mark.docker
Status = Reservation.Status
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"


@pytest.fixture
def booking(db, engine_host, window, docker_scope, test_image, default_profile):
    user = UserFactory(ssh_public_keys="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAtestkey user@laptop")
    return ReservationFactory(
        user=user,
        host=engine_host,
        cpus=Decimal("1.5"),
        memory_gb=10,
        image=test_image,
        extra_command="sleep 3600",
        gpus=list(engine_host.gpus.order_by("index")),
        **window,
    )


def managed(docker_client, scope: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}={scope}"})


def test_the_container_runs_exactly_as_booked(booking, docker_client):
    reconcile(wake=False)
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING, booking.status_message
    attrs = docker_client.containers.get(booking.container_id).attrs
    config, host_config = attrs["Config"], attrs["HostConfig"]
    assert attrs["State"]["Running"]
    assert attrs["Name"] == f"/{django_settings.CONTAINER_PREFIX}{booking.user.username}"
    assert host_config["NanoCpus"] == 1_500_000_000
    assert host_config["Memory"] == 8 * GIB
    assert host_config["MemorySwap"] == 10 * GIB
    assert host_config["ShmSize"] == 2 * GIB
    [device_request] = host_config["DeviceRequests"]
    uuids = [gpu.uuid for gpu in booking.host.gpus.order_by("index")]
    assert device_request["DeviceIDs"] == uuids
    assert f"NVIDIA_VISIBLE_DEVICES={','.join(uuids)}" in config["Env"]
    assert host_config["PortBindings"]["22/tcp"][0]["HostPort"] == str(booking.forward_port)
    assert not host_config["Privileged"]
    assert host_config["PidMode"] in ("", "private")
    mounts = {mount["Destination"]: mount for mount in attrs["Mounts"]}
    assert mounts["/root/Dataset"]["RW"] is False
    assert mounts["/root/Work"]["RW"] is True
    assert mounts["/root/Work"]["Source"] == f"{booking.host.work_root}/{booking.user.username}"
    assert mounts["/root/Backup"]["Source"] == f"{booking.host.backup_root}/{booking.user.username}"
    assert mounts["/root/.ssh/authorized_keys"]["RW"] is False
    assert Path(booking.host.work_root, booking.user.username).is_dir()
    assert config["Labels"][LABEL_RESERVATION] == str(booking.pk)
    assert config["Labels"]["aivc.user"] == booking.user.username
    assert config["Cmd"] == ["sleep", "3600"]
    inspected = str(attrs)
    assert PASSWORD not in inspected
    assert "password" not in " ".join(config["Env"]).lower()
    keys = Path(mounts["/root/.ssh/authorized_keys"]["Source"]).read_text()
    assert "AAAAtestkey" in keys


def test_a_container_without_gpus_is_told_none(booking, docker_client):
    booking.allocations.all().delete()
    reconcile(wake=False)
    booking.refresh_from_db()
    attrs = docker_client.containers.get(booking.container_id).attrs
    assert "NVIDIA_VISIBLE_DEVICES=none" in attrs["Config"]["Env"]
    assert not attrs["HostConfig"]["DeviceRequests"]


def test_ssh_host_keys_persist_across_reservations(booking, docker_client):
    reconcile(wake=False)
    booking.refresh_from_db()
    first = docker_client.containers.get(booking.container_id)
    key_before = first.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output
    Reservation.objects.filter(pk=booking.pk).update(restart_requested=True)
    reconcile(wake=False)
    booking.refresh_from_db()
    second = docker_client.containers.get(booking.container_id)
    assert second.id != first.id
    assert second.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output == key_before
    assert key_before.startswith(b"ssh-ed25519 ")


@pytest.mark.parametrize("how", ["end", "cancel", "release"])
def test_the_container_is_gone_within_one_reconcile(booking, docker_client, docker_scope, how):
    reconcile(wake=False)
    if how == "end":
        Reservation.objects.filter(pk=booking.pk).update(end=timezone.now())
    elif how == "cancel":
        Reservation.objects.filter(pk=booking.pk).update(status=Status.CANCELLED)
    else:
        reservation_release(reservation=booking)
    reconcile(wake=False)
    assert managed(docker_client, docker_scope) == []


def test_renaming_the_host_never_orphans_its_container(booking, docker_client, docker_scope):
    reconcile(wake=False)
    booking.refresh_from_db()
    started = booking.container_id
    booking.host.name = f"{booking.host.name}-renamed"
    booking.host.save()

    reconcile(wake=False)
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING and booking.container_id == started
    assert [container.id for container in managed(docker_client, docker_scope)] == [started]

    reservation_release(reservation=booking)
    reconcile(wake=False)
    assert managed(docker_client, docker_scope) == []


def test_an_orphan_container_is_removed(booking, docker_client, docker_scope):
    docker_client.containers.run(
        TEST_IMAGE,
        name=f"{django_settings.CONTAINER_PREFIX}orphan",
        detach=True,
        labels={LABEL_MANAGED: docker_scope, "aivc.host": booking.host.name, LABEL_RESERVATION: "987654"},
    )
    reconcile(wake=False)
    names = [container.name for container in managed(docker_client, docker_scope)]
    assert names == [f"{django_settings.CONTAINER_PREFIX}{booking.user.username}"]
    assert ContainerEvent.objects.filter(sign="OrphanContainer").exists()


def test_a_container_killed_from_outside_comes_back(booking, docker_client, docker_scope):
    reconcile(wake=False)
    booking.refresh_from_db()
    docker_client.containers.get(booking.container_id).kill()
    reconcile(wake=False)
    booking.refresh_from_db()
    [container] = managed(docker_client, docker_scope)
    assert container.status == "running"
    assert booking.restart_count == 1
    assert ContainerEvent.objects.filter(sign="ContainerDied", reservation=booking).exists()


def test_a_missing_image_fails_with_a_clear_message(booking, docker_client, docker_scope):
    booking.image.reference = "aivc-test/not-pulled:never"
    booking.image.save()
    reconcile(wake=False)
    prepare_image(booking.pk)  # the host's agent tries a pull, which fails offline
    reconcile(wake=False)
    booking.refresh_from_db()
    assert booking.status == Status.FAILED
    assert "aivc-test/not-pulled:never is not on" in booking.status_message
    assert managed(docker_client, docker_scope) == []


def test_an_engine_that_does_not_answer_keeps_the_reservation_due(booking, tmp_path):
    booking.host.docker_url = f"unix://{tmp_path}/no-engine.sock"
    booking.host.save()
    reconcile(wake=False)
    booking.refresh_from_db()
    assert booking.status == Status.SCHEDULED
    assert ContainerEvent.objects.filter(level="ERROR", sign="EngineUnavailable").count() == 1


def test_a_port_taken_on_the_server_is_a_launch_error_naming_the_port_retried_then_failed(
    booking, docker_client, docker_scope, settings
):
    settings.CONTAINER_MAX_RESTARTS = 1
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("0.0.0.0", booking.forward_port))  # noqa: S104 - as dockerd binds it
    squatter.listen()
    try:
        reconcile(wake=False)
        booking.refresh_from_db()
        assert booking.status != Status.FAILED and booking.restart_count == 1
        retry = ContainerEvent.objects.get(reservation=booking, sign="LaunchError")
        assert f"port {booking.forward_port} of {booking.host.name} is in use" in retry.message
        assert not ContainerEvent.objects.filter(sign="EngineUnavailable").exists()

        reconcile(wake=False)
        booking.refresh_from_db()
        assert booking.status == Status.FAILED
        assert f"port {booking.forward_port}" in booking.status_message
        assert managed(docker_client, docker_scope) == []
    finally:
        squatter.close()


def _dockerd_pid() -> int | None:
    try:
        return int(Path("/var/run/docker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


@destructive_engine_test
def test_the_due_reservation_starts_after_the_engine_comes_back(booking, docker_client, docker_scope):
    pid = _dockerd_pid()
    assert pid, "dockerd was not started by deploy/test-engine/setup.sh (no /var/run/docker.pid)"
    os.kill(pid, signal.SIGTERM)
    try:
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.2)
        reconcile(wake=False)
        booking.refresh_from_db()
        assert booking.status == Status.SCHEDULED
        assert ContainerEvent.objects.filter(sign="EngineUnavailable").exists()
    finally:
        subprocess.run([SETUP_ENGINES], check=True, capture_output=True)
    reconcile(wake=False)
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING
    assert [c.status for c in managed(docker_client, docker_scope)] == ["running"]


@pytest.mark.django_db(transaction=True)
def test_a_tick_killed_mid_way_is_finished_by_the_next_without_a_duplicate(
    engine_host, window, docker_scope, test_image, default_profile, docker_client
):
    reservation = ReservationFactory(host=engine_host, image=test_image, **window)
    environment = {
        **os.environ,
        "DATABASE_URL": _url_of_the_test_database(),
        "CONTAINER_RUNTIME": "tests.containers.slow_runtime.SlowAfterStartRuntime",
        "CONTAINER_SCOPE": django_settings.CONTAINER_SCOPE,
        "CONTAINER_NETWORK": django_settings.CONTAINER_NETWORK,  # the scope's own, removed after
        "CONTAINER_PREFIX": django_settings.CONTAINER_PREFIX,
        "SECRET_KEY": django_settings.SECRET_KEY,
        "DEBUG": "0",
    }
    tick = subprocess.Popen(
        [sys.executable, "manage.py", "reconcile"],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(150):
            if managed(docker_client, docker_scope):
                break
            time.sleep(0.1)
        assert managed(docker_client, docker_scope), "the tick never started the container"
    finally:
        tick.send_signal(signal.SIGKILL)
        tick.wait()
    reservation.refresh_from_db()
    assert reservation.status == Status.STARTING  # the killed tick never marked it running
    reconcile(wake=False)
    reconcile(wake=False)
    reservation.refresh_from_db()
    containers = managed(docker_client, docker_scope)
    assert len(containers) == 1
    assert reservation.status == Status.RUNNING
    assert reservation.container_id == containers[0].id


def _url_of_the_test_database() -> str:
    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
