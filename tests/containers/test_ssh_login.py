"""The last mile, proven on a real engine: a student with a fresh ed25519 key books `now`
through the services, one reconcile tick starts the container from the offline sshd image
(deploy/test-engine/setup.sh, the same sshd_config and entrypoint as deploy/images/), and
`ssh -p <forward_port> -i key root@127.0.0.1` runs a command inside."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import reservation_create, reservation_release
from containers.models import ContainerEvent
from containers.tasks import reconcile
from tests.factories import ImageFactory, UserFactory
from tests.images import SSHD_IMAGE

pytestmark = pytest.mark.docker
SSH_READY_S = 30


@pytest.fixture
def sshd_image(db, docker_client):
    """The offline sshd image; a missing one skips with the command that builds it, and
    fails under AIVC_REQUIRE_DOCKER=1 (CI)."""
    try:
        docker_client.images.get(SSHD_IMAGE)
    except Exception:
        message = (
            f"The engine answers but the sshd test image {SSHD_IMAGE} is missing; "
            "build it with deploy/test-engine/setup.sh (as root, about a minute)."
        )
        if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ImageFactory(reference=SSHD_IMAGE)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _key_pair(folder: Path, name: str) -> tuple[Path, str]:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, key.with_name(f"{name}.pub").read_text().strip()


def _ssh(*, port: int, key: Path, known_hosts: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "ssh",
            "-p",
            str(port),
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "ConnectTimeout=5",
            "root@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _learn_host_key(*, port: int, known_hosts: Path) -> None:
    """Writes what the container's sshd presents to known_hosts, once it answers."""
    deadline = time.monotonic() + SSH_READY_S
    while time.monotonic() < deadline:
        scan = subprocess.run(
            ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
            capture_output=True,
            text=True,
        )
        if scan.stdout.strip():
            known_hosts.write_text(scan.stdout)
            return
        time.sleep(0.3)
    pytest.fail(f"sshd on port {port} did not answer within {SSH_READY_S} s")


def _wait_for_sshd(port: int) -> None:
    deadline = time.monotonic() + SSH_READY_S
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(1)
            try:
                probe.connect(("127.0.0.1", port))
                if probe.recv(4).startswith(b"SSH-"):
                    return
            except OSError:
                pass
        time.sleep(0.3)
    pytest.fail(f"sshd on port {port} did not answer within {SSH_READY_S} s")


def _tick_until_running(reservation: Reservation, *, host, ticks: int = 10) -> str:
    """The scheduler's minute ticks, run back to back: a tick that meets a shared engine
    busy with other test runs leaves the reservation due, and the next one launches it."""
    report = ""
    for _ in range(ticks):
        report = reconcile(host_id=host.pk, wake=False)
        reservation.refresh_from_db()
        if reservation.status == Reservation.Status.RUNNING:
            return report
        time.sleep(1)
    events = [event.as_log_line() for event in ContainerEvent.objects.filter(host=host)]
    pytest.fail(f"not running after {ticks} ticks: {report}; events: {events}")


def _book_now_and_start(*, user, host, image) -> Reservation:
    reservation = reservation_create(
        user=user, host=host, start="now", end="1-day", cpus=1, memory_gb=1, image=image
    )
    _tick_until_running(reservation, host=host)
    return reservation


def test_a_student_logs_in_with_their_key_and_finds_their_work_in_the_next_container(
    engine_host, docker_scope, sshd_image, default_profile, tmp_path
):
    key, public = _key_pair(tmp_path, "student")
    intruder_key, intruder_public = _key_pair(tmp_path, "intruder")
    port = _free_port()
    student = UserFactory(ssh_public_keys=public, forward_port=port)
    UserFactory(ssh_public_keys=intruder_public)  # another user's key, on another account
    known_hosts = tmp_path / "known_hosts"

    first = _book_now_and_start(user=student, host=engine_host, image=sshd_image)
    _learn_host_key(port=port, known_hosts=known_hosts)
    inside = _ssh(
        port=port, key=key, known_hosts=known_hosts, command="id -u && echo kept > /root/Work/proof.txt"
    )
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == "0"

    refused = _ssh(port=port, key=intruder_key, known_hosts=known_hosts, command="true")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr

    reservation_release(reservation=first, now=timezone.now())
    reconcile(host_id=engine_host.pk, wake=False)
    second = _book_now_and_start(user=student, host=engine_host, image=sshd_image)
    assert second.container_id != first.container_id
    _wait_for_sshd(port)
    # StrictHostKeyChecking=yes against the first container's key: the same host key.
    again = _ssh(port=port, key=key, known_hosts=known_hosts, command="cat /root/Work/proof.txt")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "kept"


def test_the_extra_command_runs_beside_sshd(engine_host, docker_scope, sshd_image, default_profile, tmp_path):
    key, public = _key_pair(tmp_path, "student")
    port = _free_port()
    student = UserFactory(ssh_public_keys=public, forward_port=port)
    reservation = reservation_create(
        user=student,
        host=engine_host,
        start="now",
        end="1-day",
        cpus=1,
        memory_gb=1,
        image=sshd_image,
        extra_command="sh -c 'echo from-extra > /root/Work/extra.txt; exec sleep 3600'",
    )
    _tick_until_running(reservation, host=engine_host)
    known_hosts = tmp_path / "known_hosts"
    _learn_host_key(port=port, known_hosts=known_hosts)
    inside = _ssh(port=port, key=key, known_hosts=known_hosts, command="cat /root/Work/extra.txt")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == "from-extra"


def test_a_booking_on_the_lab_image_is_entered_by_ssh_without_jupyterlab(
    engine_host, docker_scope, lab_image, default_profile, tmp_path
):
    # A booking leaves the mode to the entrypoint's default: sshd only, JupyterLab
    # installed but not started.
    key, public = _key_pair(tmp_path, "student")
    port = _free_port()
    student = UserFactory(ssh_public_keys=public, forward_port=port)
    _book_now_and_start(user=student, host=engine_host, image=lab_image)
    known_hosts = tmp_path / "known_hosts"
    _learn_host_key(port=port, known_hosts=known_hosts)
    inside = _ssh(
        port=port,
        key=key,
        known_hosts=known_hosts,
        command="id -u && test -x /opt/jupyter/bin/jupyter-lab && ! pgrep -f 'jupyter-lab$' && echo ssh-only",
    )
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split() == ["0", "ssh-only"]
