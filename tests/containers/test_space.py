"""The space audit: measuring folders, recording the verdict, lifting a block."""

import time

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


def test_a_timed_out_measurement_is_incomplete(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "file").write_bytes(b"x" * 10_000)
    assert folder_size(tmp_path, deadline=time.monotonic() - 1).complete is False
    measured = folder_size(tmp_path, deadline=time.monotonic() + 30)
    assert measured.complete and measured.bytes >= 10_000
