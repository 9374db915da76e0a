"""One student's full disk never stops another's launch: the portal's state folder
(authorized_keys, host keys) is kept off every filesystem a student can fill."""

import errno
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from aivc_portal import settings as project_settings
from containers.volumes import FolderProblem, prepare_mounts, state_root
from tests.factories import ReservationFactory, UserFactory, host_with_roots

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs of the test's own, as a lab's Backup disk that can fill up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> None:
    with open(folder / "big.bin", "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


@pytest.fixture
def default_state_root(settings):
    # The production default, not the per-test folder every other test gets.
    settings.CONTAINER_STATE_ROOT = project_settings.CONTAINER_STATE_ROOT
    settings.CONTAINER_STATE_SHARED_FS_OK = False
    made = []
    yield made
    for username in made:
        shutil.rmtree(Path(settings.CONTAINER_STATE_ROOT or "/nonexistent") / username, ignore_errors=True)


def test_a_student_who_fills_the_backup_filesystem_never_stops_another_students_launch(
    small_filesystem, default_state_root, default_profile, window
):
    host = host_with_roots(small_filesystem, name=f"small-{uuid.uuid4().hex[:6]}")
    suffix = uuid.uuid4().hex[:6]
    victim = UserFactory(username=f"victim{suffix}", ssh_public_keys="ssh-ed25519 AAAA old")
    attacker = UserFactory(username=f"filler{suffix}")
    newcomer = UserFactory(username=f"newbie{suffix}", ssh_public_keys="ssh-ed25519 AAAA new")
    default_state_root.extend(user.username for user in (victim, attacker, newcomer))
    booking = ReservationFactory(user=victim, host=host, **window)
    prepare_mounts(booking)  # her container has run before

    prepare_mounts(ReservationFactory(user=attacker, host=host, **window))
    _fill(Path(host.backup_root) / attacker.username)  # from inside his container

    victim.ssh_public_keys = "ssh-ed25519 AAAA rotated"
    victim.save()
    mounts = {m.target: m.source for m in prepare_mounts(booking)}  # her container restarts
    assert Path(mounts["/root/.ssh/authorized_keys"]).read_text() == "ssh-ed25519 AAAA rotated\n"
    assert Path(mounts["/etc/ssh/ssh_host_ed25519_key"]).stat().st_size > 0
    # A first launch on the full disk too: its host keys and keys file are made elsewhere.
    mounts = {
        m.target: m.source for m in prepare_mounts(ReservationFactory(user=newcomer, host=host, **window))
    }
    assert Path(mounts["/root/.ssh/authorized_keys"]).read_text() == "ssh-ed25519 AAAA new\n"


def test_a_state_folder_on_a_users_filesystem_is_refused_at_launch_naming_the_setting(
    engine_host, default_profile, window, settings, tmp_path
):
    settings.CONTAINER_STATE_ROOT = Path(engine_host.backup_root) / ".aivc-portal"
    settings.CONTAINER_STATE_SHARED_FS_OK = False
    reservation = ReservationFactory(user=UserFactory(), host=engine_host, **window)
    with pytest.raises(FolderProblem, match=r"same filesystem as the work root.*CONTAINER_STATE_ROOT"):
        prepare_mounts(reservation)
    assert not (state_root(engine_host) / reservation.user.username / "authorized_keys").exists()


def test_host_keys_kept_in_the_old_state_folder_are_adopted_so_users_keep_trusting_them(
    engine_host, default_profile, window, settings
):
    user = UserFactory()
    settings.CONTAINER_STATE_ROOT = Path(engine_host.backup_root) / ".aivc-portal"  # an older install
    booking = ReservationFactory(user=user, host=engine_host, **window)
    before = {m.target: m.source for m in prepare_mounts(booking)}
    old_key = Path(before["/etc/ssh/ssh_host_ed25519_key.pub"]).read_text().split()[:2]
    settings.CONTAINER_STATE_ROOT = Path(engine_host.work_root).parent / "new-state"
    after = {m.target: m.source for m in prepare_mounts(booking)}  # its container restarted
    assert after["/etc/ssh/ssh_host_ed25519_key.pub"] != before["/etc/ssh/ssh_host_ed25519_key.pub"]
    assert Path(after["/etc/ssh/ssh_host_ed25519_key.pub"]).read_text().split()[:2] == old_key
