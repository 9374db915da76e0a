"""JupyterLab through the portal: the one rule (containers.lab), the lab mode of a
booking's container and the token file the agent writes (lifecycle, volumes)."""

import json
import stat
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from bookings.models import Reservation
from containers.lab import lab_reachable, lab_target, lab_token, lab_url
from containers.lifecycle import reconcile
from containers.specs import LAB_TOKEN_FOLDER
from containers.volumes import state_root
from tests.containers.helpers import only_spec
from tests.factories import ImageFactory, ReservationFactory, UserFactory

Status = Reservation.Status


@pytest.fixture
def lab_booking(booking):
    booking.image.lab_modes = True
    booking.image.save()
    return booking


def _running(reservation: Reservation, *, address: str = "10.88.0.7") -> Reservation:
    reservation.status = Status.RUNNING
    reservation.container_address = address
    reservation.save()
    return reservation


@pytest.fixture
def running_lab(db, window):
    return ReservationFactory(
        image=ImageFactory(lab_modes=True), status=Status.RUNNING, container_address="10.88.0.7", **window
    )


def test_the_owner_reaches_a_running_lab(running_lab):
    target = lab_target(user=running_lab.user, reservation_id=running_lab.pk, now=timezone.now())
    assert target is not None
    assert target.upstream == "10.88.0.7:8888"
    assert target.token == lab_token(running_lab.pk)


def test_another_student_never_reaches_it(running_lab):
    other = UserFactory()
    assert lab_target(user=other, reservation_id=running_lab.pk, now=timezone.now()) is None


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("status", Status.ENDED),
        ("status", Status.STARTING),
        ("container_address", ""),
        ("kind", Reservation.Kind.JOB),
    ],
)
def test_a_lab_that_is_not_running_is_not_reached(running_lab, change, value):
    setattr(running_lab, change, value)
    running_lab.save()
    assert lab_target(user=running_lab.user, reservation_id=running_lab.pk, now=timezone.now()) is None


def test_the_lab_closes_at_the_end_of_the_window_even_before_the_tick_ends_it(running_lab):
    after = running_lab.end + timedelta(seconds=1)
    assert lab_target(user=running_lab.user, reservation_id=running_lab.pk, now=after) is None
    assert lab_url(running_lab, now=after) is None


def test_an_image_without_lab_modes_has_no_lab(running_lab):
    running_lab.image.lab_modes = False
    running_lab.image.save()
    running_lab.refresh_from_db()
    assert not lab_reachable(running_lab, now=timezone.now())
    assert lab_url(running_lab, now=timezone.now()) is None


def test_an_account_that_must_change_its_password_is_sent_there_first(running_lab):
    running_lab.user.must_change_password = True
    running_lab.user.save()
    assert lab_target(user=running_lab.user, reservation_id=running_lab.pk, now=timezone.now()) is None


def test_each_reservation_has_its_own_token_made_from_the_portal_key(running_lab, settings):
    assert lab_token(1) != lab_token(2)
    assert len(lab_token(1)) == 64
    first = lab_token(1)
    settings.SECRET_KEY = "another key " * 5
    assert lab_token(1) != first


def test_an_ipv6_address_is_bracketed(running_lab):
    running_lab.container_address = "fd00::5"
    running_lab.save()
    target = lab_target(user=running_lab.user, reservation_id=running_lab.pk, now=timezone.now())
    assert target.upstream == "[fd00::5]:8888"


# The container a lab image's booking runs with ------------------------------------------


def test_a_booking_on_a_lab_image_runs_jupyterlab_under_its_base_url(lab_booking):
    reconcile()
    lab_booking.refresh_from_db()
    spec = only_spec(lab_booking)
    assert spec.environment["AIVC_MODE"] == "lab"
    assert spec.environment["AIVC_LAB_BASE_URL"] == f"/r/{lab_booking.pk}/lab/"
    [token_mount] = [mount for mount in spec.mounts if mount.target == LAB_TOKEN_FOLDER]
    assert token_mount.read_only
    assert spec.ssh_port == lab_booking.user.forward_port  # sshd stays beside it
    # The agent recorded where the proxy finds the container.
    assert lab_booking.status == Status.RUNNING
    assert lab_booking.container_address.startswith("10.88.")


def test_the_token_is_only_in_a_file_of_the_portal_state_folder(lab_booking):
    reconcile()
    spec = only_spec(lab_booking)
    token = lab_token(lab_booking.pk)
    # Never in what `docker inspect` shows: environment, command, labels.
    assert token not in json.dumps(asdict(spec))
    [token_mount] = [mount for mount in spec.mounts if mount.target == LAB_TOKEN_FOLDER]
    folder = Path(token_mount.source)
    state = state_root(lab_booking.host)
    assert folder.parent == state / lab_booking.user.username
    assert (folder / "token").read_text() == f"{token}\n"
    # Nobody else on the host reads it: the folders above it are the portal's, 0700.
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not (folder / "token").is_symlink()
    # JupyterLab is told to leave the token out of its pages (and so out of WebSocket URLs).
    assert spec.environment["JUPYTER_CONFIG_PATH"] == LAB_TOKEN_FOLDER
    assert "page_config_hook" in (folder / "jupyter_server_config.py").read_text()


def test_a_booking_on_another_image_runs_as_before(booking):
    reconcile()
    spec = only_spec(booking)
    assert "AIVC_MODE" not in spec.environment
    assert LAB_TOKEN_FOLDER not in {mount.target for mount in spec.mounts}


def test_a_container_adopted_after_a_crashed_tick_gets_its_address_recorded(lab_booking, fake_runtime):
    reconcile()
    Reservation.objects.filter(pk=lab_booking.pk).update(status=Status.STARTING, container_address="")
    reconcile()
    lab_booking.refresh_from_db()
    assert lab_booking.status == Status.RUNNING
    assert lab_booking.container_address.startswith("10.88.")
