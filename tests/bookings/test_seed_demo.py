"""`make run` on a fresh machine: the demo host is this machine, the demo image one the
local engine holds, and the printed admin password must be changed at the first login."""

import io
import subprocess

import pytest
from django.core.management import call_command

from accounts.models import CapabilityProfile, User
from bookings.forms import BookingForm
from containers.bootstrap import detect_machine
from containers.fake_runtime import FakeRuntime
from containers.models import Host, Image, ImagePresence
from containers.runtime import EngineUnavailable

pytestmark = pytest.mark.django_db


def seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def engine(settings, tmp_path):
    settings.BASE_DIR = tmp_path
    settings.CONTAINER_RUNTIME = "containers.fake_runtime.FakeRuntime"
    FakeRuntime.reset()
    yield FakeRuntime
    FakeRuntime.reset()


def test_the_demo_host_is_this_machine_and_the_profile_fits_it(engine):
    seed()
    host = Host.objects.get()
    machine = detect_machine()
    assert (host.cpus, host.ram_gb, host.swap_gb) == (machine.cpus, machine.ram_gb, machine.swap_gb)
    profile = CapabilityProfile.objects.get(is_default=True)
    assert profile.cpus <= host.cpus
    assert profile.memory_gb <= host.memory_gb
    assert profile.gpus <= host.gpus.count()


def test_the_demo_image_is_a_lab_image_the_engine_holds(engine, monkeypatch):
    monkeypatch.setattr(FakeRuntime, "lab_images", lambda self: ["aivc-test/sshd:latest"])
    seed()
    assert Image.objects.get(is_default=True).reference == "aivc-test/sshd:latest"


def test_without_a_lab_image_the_demo_says_how_to_build_one_and_offers_none(engine, monkeypatch, settings):
    settings.LAB_IMAGE = "aivc/lab:cpu"
    monkeypatch.setattr(FakeRuntime, "lab_images", lambda self: [])
    out = seed()
    assert "sudo make lab-image" in out
    image = Image.objects.get(is_default=True)
    assert (image.reference, image.lab_modes) == ("aivc/lab:cpu", True)
    presence = ImagePresence.objects.get(image=image)
    assert presence.state == ImagePresence.State.FAILED
    assert "make lab-image" in presence.message
    student = User.objects.get(username="admin")
    assert list(BookingForm(user=student).fields["image"].queryset) == []


def test_make_run_builds_the_lab_image_once_and_makes_it_the_bookable_default(engine, monkeypatch, settings):
    settings.LAB_IMAGE = "aivc/lab:cpu"
    held: list[str] = []
    monkeypatch.setattr(FakeRuntime, "lab_images", lambda self: list(held))
    builds = []

    def build(arguments, **options):
        builds.append((arguments, options["env"]["AIVC_LAB_IMAGE"]))
        held.append("aivc/lab:cpu")
        return subprocess.CompletedProcess(arguments, 0)

    monkeypatch.setattr(subprocess, "run", build)
    out = seed("--build-lab-image")
    assert "building aivc/lab:cpu once" in out
    [(arguments, tag)] = builds
    assert arguments[0].endswith("deploy/images/build-lab-image.sh")
    assert tag == "aivc/lab:cpu"
    image = Image.objects.get(is_default=True)
    assert (image.reference, image.lab_modes) == ("aivc/lab:cpu", True)
    assert ImagePresence.objects.get(image=image).state == ImagePresence.State.PRESENT
    assert list(BookingForm(user=User.objects.get(username="admin")).fields["image"].queryset) == [image]

    seed("--build-lab-image")
    assert len(builds) == 1


def test_without_an_engine_the_demo_says_so_and_serves_the_portal(engine, monkeypatch, settings):
    settings.LAB_IMAGE = "aivc/lab:cpu"

    def unavailable(self):
        raise EngineUnavailable("no engine at unix:///var/run/docker.sock")

    monkeypatch.setattr(FakeRuntime, "lab_images", unavailable)
    out = seed("--build-lab-image")
    assert "No Docker engine answers" in out
    assert Image.objects.get(is_default=True).reference == "aivc/lab:cpu"
    assert not ImagePresence.objects.exists()


def test_the_printed_admin_password_must_be_changed(engine):
    out = seed()
    assert "Created admin account 'admin' with password:" in out
    assert User.objects.get(username="admin").must_change_password
    assert "password" not in seed()
