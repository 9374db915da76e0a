"""The space audit: measuring folders, recording the verdict, lifting a block."""

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import CapabilityProfile
from bookings.models import Reservation
from containers.lifecycle import reconcile
from containers.models import SpaceAudit
from containers.space import audit_user_space, folder_size
from tests.containers.helpers import SpaceAuditFactory, events

Status = Reservation.Status


def test_a_blocked_reservation_launches_once_back_under_quota(booking):
    SpaceAuditFactory(user=booking.user, host=booking.host, work_gb=250, backup_gb=1, over_quota=True)
    reconcile()
    assert not audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30)
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.RUNNING


def test_the_audit_records_over_quota_and_warns(booking, roots):
    folder = roots["work"] / booking.user.username
    folder.mkdir()
    (folder / "big.bin").write_bytes(b"x" * 300_000)
    CapabilityProfile.objects.filter(is_default=True).update(work_space_gb=0)
    assert audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30)
    audit = SpaceAudit.objects.get(user=booking.user)
    assert audit.over_quota and audit.complete
    assert events(booking, sign="SpaceWarning")


def test_the_home_is_measured_against_its_own_quota(booking, roots):
    home = roots["backup"] / ".aivc-home" / booking.user.username
    (home / "venv" / "lib").mkdir(parents=True)
    (home / "venv" / "lib" / "torch.so").write_bytes(b"x" * 300_000)
    CapabilityProfile.objects.filter(is_default=True).update(
        work_space_gb=1, backup_space_gb=1, home_space_gb=0
    )
    assert audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30)
    audit = SpaceAudit.objects.get(user=booking.user)
    assert audit.over_quota and audit.home_gb is not None
    [warning] = events(booking, sign="SpaceWarning")
    assert "home_dir" in warning.message
    CapabilityProfile.objects.filter(is_default=True).update(home_space_gb=1)
    assert not audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30)


def test_a_timed_out_measurement_is_incomplete(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "file").write_bytes(b"x" * 10_000)
    assert folder_size(tmp_path, deadline=time.monotonic() - 1).complete is False
    measured = folder_size(tmp_path, deadline=time.monotonic() + 30)
    assert measured.complete and measured.bytes >= 10_000


# An audit that cannot be dodged: what a student locks away counts as over quota --------

NOBODY = 65534
ANOTHER_UID = 12345


@contextmanager
def as_an_unprivileged_scheduler():
    """A scheduler that is not root: as root, measure with the effective uid of nobody (so
    permissions apply as they would to it); otherwise the process is unprivileged already."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def open_roots(booking):
    """Host roots that an unprivileged scheduler can traverse (pytest's tmp_path is root's
    own), holding the booking user's work and backup folders."""
    base = Path(tempfile.mkdtemp(prefix="aivc-space-"))
    base.chmod(0o755)
    for name in ("work", "backup"):
        (base / name / booking.user.username).mkdir(parents=True)
        for folder in (base / name, base / name / booking.user.username):
            folder.chmod(0o755)
    booking.host.work_root, booking.host.backup_root = str(base / "work"), str(base / "backup")
    booking.host.save()
    yield base
    for folder, _, _ in os.walk(base):
        os.chmod(folder, 0o700)
    shutil.rmtree(base)


def lock_away(folder: Path, how: str) -> None:
    """What a student, root in their own container, does to a folder of theirs."""
    (folder / "big.bin").write_bytes(b"x" * 100_000)
    if how == "owned by another uid, 0700":
        if os.geteuid() != 0:
            pytest.skip("making a folder another uid's needs root")
        os.chown(folder, ANOTHER_UID, ANOTHER_UID)
        folder.chmod(0o700)
    elif how == "chmod 000":
        folder.chmod(0o000)
    else:  # listable but not enterable: names readable, sizes not
        folder.chmod(0o644)


LOCKS = ["owned by another uid, 0700", "chmod 000", "chmod 644"]


@pytest.mark.parametrize("how", LOCKS)
def test_the_measurement_names_a_folder_it_cannot_read(open_roots, booking, how):
    locked = open_roots / "work" / booking.user.username / "private"
    locked.mkdir()
    lock_away(locked, how)

    with as_an_unprivileged_scheduler():
        measured = folder_size(open_roots / "work" / booking.user.username, deadline=time.monotonic() + 30)

    assert measured.complete is False
    assert measured.unreadable is not None and locked in (measured.unreadable, *measured.unreadable.parents)


def test_a_locked_folder_in_the_home_is_named_as_the_student_sees_it(open_roots, booking):
    home = open_roots / "backup" / ".aivc-home" / booking.user.username
    home.mkdir(parents=True)
    for folder in (home.parent, home):
        folder.chmod(0o755)
    (home / "private").mkdir(mode=0o000)
    with as_an_unprivileged_scheduler():
        assert audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30)
    assert SpaceAudit.objects.get(user=booking.user).unreadable == "~/private"


@pytest.mark.parametrize("how", LOCKS)
def test_a_folder_the_audit_cannot_read_counts_as_over_quota_and_blocks_the_launch(open_roots, booking, how):
    locked = open_roots / "backup" / booking.user.username / "stash"
    locked.mkdir()
    lock_away(locked, how)

    with as_an_unprivileged_scheduler():
        over = audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30)

    assert over
    audit = SpaceAudit.objects.get(user=booking.user)
    assert audit.over_quota and not audit.complete
    assert audit.unreadable.startswith("Backup/stash")
    [warning] = events(booking, sign="SpaceAuditUnreadable")
    assert "Backup/stash" in warning.message and str(open_roots) not in warning.message
    reconcile()
    booking.refresh_from_db()
    assert booking.status == Status.BLOCKED
    assert "The space check cannot read Backup/stash" in booking.status_message


def test_once_the_folder_is_readable_again_the_launch_goes_ahead(open_roots, booking):
    locked = open_roots / "work" / booking.user.username / "private"
    locked.mkdir()
    lock_away(locked, "chmod 000")
    with as_an_unprivileged_scheduler():
        audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30)
    reconcile()

    locked.chmod(0o755)
    with as_an_unprivileged_scheduler():
        assert not audit_user_space(
            user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=30
        )
    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.RUNNING


def test_a_timeout_under_quota_is_still_never_a_pass(booking):
    SpaceAuditFactory(user=booking.user, host=booking.host, work_gb=250, backup_gb=1, over_quota=True)
    audit_user_space(user_id=booking.user_id, host=booking.host, now=timezone.now(), timeout_s=0)
    reconcile()

    booking.refresh_from_db()
    assert booking.status == Status.BLOCKED
    assert SpaceAudit.objects.filter(complete=False, over_quota=False).exists()


def test_the_student_sees_which_folder_the_audit_cannot_read_on_the_dashboard(booking, client):
    SpaceAuditFactory(
        user=booking.user, host=booking.host, over_quota=True, complete=False, unreadable="Work/x"
    )
    client.force_login(booking.user)

    page = client.get(reverse("dashboard")).content.decode()

    assert "The space check cannot read Work/x, so your folders count as over quota." in page
    assert "timed out" not in page
