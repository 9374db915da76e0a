"""The student's environment on a real engine: the persistent home at /root outlives a
booking (a virtualenv's package included), a link a student swaps in at a mount point
inside the home moves that mount only inside their own container, and a container sees
the CPUs it booked (`nproc`, `os.cpu_count()`)."""

import io
import os
import socket
import zipfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import reservation_release
from containers import lifecycle
from containers.models import ContainerEvent
from containers.runtime import get_runtime
from containers.specs import container_spec
from containers.tasks import reconcile
from containers.volumes import prepare_mounts
from tests.factories import ImageFactory, ReservationFactory, UserFactory

pytestmark = pytest.mark.docker
Status = Reservation.Status
LAB_IMAGE = os.environ.get("AIVC_LAB_IMAGE", "aivc/lab:cpu")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAhomekey student@laptop"


@pytest.fixture
def lab_image(db, docker_client):
    """The offline lab image (`make lab-image`); missing: skipped, or failed in CI."""
    try:
        docker_client.images.get(LAB_IMAGE)
    except Exception:
        message = f"The lab image {LAB_IMAGE} is missing; build it with `make lab-image`."
        if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ImageFactory(reference=LAB_IMAGE)


def free_port() -> int:
    """A port no container on the shared engine publishes (another run's may hold 10001)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def a_student(username: str):
    return UserFactory(username=username, ssh_public_keys=KEY, forward_port=free_port())


@pytest.fixture
def student(db, default_profile):
    return a_student("homestudent")


def book(user, host, image, *, cpus: str = "1", start=None, extra_command: str = "sleep 3600") -> Reservation:
    start = start or timezone.now() - timedelta(minutes=1)
    return ReservationFactory(
        user=user,
        host=host,
        image=image,
        cpus=Decimal(cpus),
        memory_gb=1,
        extra_command=extra_command,
        start=start,
        end=start + timedelta(hours=1),
    )


def running(reservation: Reservation, docker_client):
    reconcile(wake=False)
    reservation.refresh_from_db()
    events = list(ContainerEvent.objects.filter(reservation=reservation).values_list("message", flat=True))
    assert reservation.status == Status.RUNNING, (reservation.status_message, events)
    return docker_client.containers.get(reservation.container_id)


def run_in(container, command: list[str]) -> str:
    result = container.exec_run(command)
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return result.output.decode().strip()


def end_booking(reservation: Reservation, docker_client) -> None:
    reservation_release(reservation=reservation, now=timezone.now())
    container_id = reservation.container_id
    reconcile(wake=False)
    assert container_id not in {c.id for c in docker_client.containers.list(all=True)}
    reservation.refresh_from_db()


def probe_wheel() -> bytes:
    """A one-module wheel, so the install needs no package index."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("aivc_probe.py", "VALUE = 'kept across bookings'\n")
        info = "aivc_probe-1.0.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: aivc-probe\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return buffer.getvalue()


def test_a_package_installed_into_a_virtualenv_is_there_in_the_next_booking(
    engine_host, docker_scope, docker_client, lab_image, student
):
    first = book(student, engine_host, lab_image)
    container = running(first, docker_client)
    work = Path(engine_host.work_root) / student.username
    (work / "aivc_probe-1.0-py3-none-any.whl").write_bytes(probe_wheel())
    run_in(container, ["python3", "-m", "venv", "/root/venvs/probe"])
    run_in(
        container,
        ["/root/venvs/probe/bin/pip", "install", "--no-index", "/root/Work/aivc_probe-1.0-py3-none-any.whl"],
    )
    end_booking(first, docker_client)

    second = book(student, engine_host, lab_image, start=first.end)
    again = running(second, docker_client)
    assert again.id != container.id
    printed = run_in(
        again, ["/root/venvs/probe/bin/python", "-c", "import aivc_probe; print(aivc_probe.VALUE)"]
    )
    assert printed == "kept across bookings"


def test_dotfiles_and_config_written_in_the_home_outlive_the_booking(
    engine_host, docker_scope, docker_client, test_image, student
):
    first = book(student, engine_host, test_image)
    container = running(first, docker_client)
    run_in(container, ["sh", "-c", "mkdir -p /root/.config/tool && echo dark > /root/.config/tool/theme"])
    run_in(container, ["sh", "-c", "echo 'alias ll=ls' > /root/.zshrc"])
    end_booking(first, docker_client)

    again = running(book(student, engine_host, test_image, start=first.end), docker_client)
    assert run_in(again, ["cat", "/root/.config/tool/theme"]) == "dark"
    assert run_in(again, ["cat", "/root/.zshrc"]) == "alias ll=ls"
    # The folders mounted inside the home are the user's own, not copies in the home.
    assert run_in(again, ["sh", "-c", "echo w > /root/Work/w && echo b > /root/Backup/b"]) == ""
    assert (Path(engine_host.work_root) / student.username / "w").read_text() == "w\n"


def test_a_link_swapped_in_at_a_mount_point_after_the_check_moves_the_mount_only_inside_the_container(
    engine_host, docker_scope, docker_client, test_image, student, monkeypatch, tmp_path
):
    """The attacker wins the race: after the portal checked the mount points in her home,
    she swaps `Work` for a link to another student's folder (by its host path) and `.ssh`
    for a link to /etc. The engine resolves mount targets inside the container, so the
    mounts land in her own container's file tree, and nothing outside her folders changes."""
    victim_home = Path(engine_host.backup_root) / ".aivc-home" / "victim"
    victim_home.mkdir(parents=True)
    (victim_home / ".bashrc").write_text("victim's own\n")
    outside = tmp_path / "host-etc"
    outside.mkdir()
    work = Path(engine_host.work_root) / student.username
    work.mkdir(parents=True)
    (work / "mine").write_text("the attacker's own\n")

    def prepare_then_swap(reservation):
        mounts = prepare_mounts(reservation)
        home = Path(engine_host.backup_root) / ".aivc-home" / student.username
        (home / "Work").rmdir()
        (home / "Work").symlink_to(victim_home)
        (home / ".ssh" / "authorized_keys").unlink()
        (home / ".ssh").rmdir()
        (home / ".ssh").symlink_to(outside)
        return mounts

    monkeypatch.setattr(lifecycle, "prepare_mounts", prepare_then_swap)
    reservation = book(student, engine_host, test_image)
    container = running(reservation, docker_client)

    # Her own Work folder is mounted where the link leads inside her container...
    assert run_in(container, ["ls", str(victim_home)]) == "mine"
    assert run_in(container, ["cat", "/root/Work/mine"]) == "the attacker's own"
    # ...and the portal's keys where /root/.ssh leads inside it, not in the host folder.
    assert "AAAAhomekey" in run_in(container, ["cat", "/root/.ssh/authorized_keys"])
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in victim_home.iterdir()) == [".bashrc"]
    assert (victim_home / ".bashrc").read_text() == "victim's own\n"


def cpu_views(container, *, python: bool) -> dict[str, str]:
    views = {"nproc": run_in(container, ["sh", "-c", "nproc"])}
    if python:
        views["os.cpu_count"] = run_in(container, ["python3", "-c", "import os; print(os.cpu_count())"])
    views["OMP_NUM_THREADS"] = run_in(container, ["sh", "-c", "echo $OMP_NUM_THREADS"])
    return views


@pytest.mark.parametrize("image_kind", ["test", "lab"])
def test_a_one_and_a_two_cpu_container_see_one_and_two_cpus(
    engine_host, docker_scope, docker_client, test_image, student, settings, image_kind, request
):
    if docker_client.info().get("NCPU", 0) < 2:
        pytest.skip("The engine has fewer than 2 CPUs.")
    settings.CONTAINER_CPUSET = True
    image = request.getfixturevalue("lab_image") if image_kind == "lab" else test_image
    python = image_kind == "lab"
    one = book(student, engine_host, image, cpus="1")
    other = a_student("homestudent2")
    two = book(other, engine_host, image, cpus="1.5")  # rounded up: 2
    reconcile(wake=False)
    for reservation in (one, two):
        reservation.refresh_from_db()
        assert reservation.status == Status.RUNNING, reservation.status_message
    first = docker_client.containers.get(one.container_id)
    second = docker_client.containers.get(two.container_id)
    assert set(cpu_views(first, python=python).values()) == {"1"}
    assert set(cpu_views(second, python=python).values()) == {"2"}
    assert first.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000  # the quota stays the limit
    assert second.attrs["HostConfig"]["NanoCpus"] == 1_500_000_000


def test_two_one_cpu_containers_of_a_tick_are_pinned_to_different_cpus(
    engine_host, docker_scope, docker_client, test_image, student, settings
):
    if docker_client.info().get("NCPU", 0) < 2:
        pytest.skip("The engine has fewer than 2 CPUs.")
    settings.CONTAINER_CPUSET = True
    runtime = get_runtime(engine_host)
    specs = [
        runtime.with_cpuset(
            container_spec(
                reservation=book(user, engine_host, test_image), image=test_image.reference, mounts=[]
            )
        )
        for user in (student, a_student("homestudent3"))
    ]
    assert len({spec.cpuset for spec in specs}) == 2
    assert all(len(spec.cpuset) == 1 for spec in specs)


def test_without_pinning_the_variables_still_say_the_booked_size(
    engine_host, docker_scope, docker_client, test_image, student, settings
):
    settings.CONTAINER_CPUSET = False
    reservation = book(student, engine_host, test_image, cpus="1")
    container = running(reservation, docker_client)
    assert container.attrs["HostConfig"]["CpusetCpus"] == ""
    assert run_in(
        container, ["sh", "-c", "echo $OMP_NUM_THREADS $MKL_NUM_THREADS $OPENBLAS_NUM_THREADS"]
    ) == ("1 1 1")


def test_the_home_is_there_before_sshd_reads_the_keys(
    engine_host, docker_scope, docker_client, test_image, student
):
    """The keys file sits inside the mounted home: the file the container reads is the
    portal's, read-only."""
    container = running(book(student, engine_host, test_image), docker_client)
    assert "AAAAhomekey" in run_in(container, ["cat", "/root/.ssh/authorized_keys"])
    result = container.exec_run(["sh", "-c", "echo x >> /root/.ssh/authorized_keys"])
    assert result.exit_code != 0


def test_the_entrypoint_seeds_an_empty_home_from_skel_and_keeps_what_is_there(docker_client, tmp_path):
    """deploy/images/entrypoint.sh (mounted over the test image's copy): an empty home gets
    /etc/skel's start-up files; a file the student changed is never overwritten."""
    import docker

    image = os.environ.get("AIVC_SSHD_IMAGE", "aivc-test/sshd:latest")
    try:
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{image} is missing; build it with deploy/test-engine/setup.sh.")
    entrypoint = Path(__file__).resolve().parents[2] / "deploy" / "images" / "entrypoint.sh"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text("# the student's own\n")
    mounts = [
        docker.types.Mount("/root", str(home), type="bind"),
        docker.types.Mount("/usr/local/sbin/aivc-entrypoint", str(entrypoint), type="bind", read_only=True),
    ]
    container = docker_client.containers.run(image, detach=True, mounts=mounts)
    try:
        container.wait(timeout=30)  # exits 78 without host keys, after seeding
    finally:
        container.remove(force=True)
    assert (home / ".bashrc").is_file()
    assert (home / ".profile").read_text() == "# the student's own\n"
