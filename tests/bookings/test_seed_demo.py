"""`make run` on a fresh machine: the demo host is this machine, the demo image one the
local engine holds, and the printed admin password must be changed at the first login."""

import io

import pytest
from django.core.management import call_command

from accounts.models import CapabilityProfile, User
from containers.bootstrap import detect_machine
from containers.fake_runtime import FakeRuntime
from containers.models import Host, Image

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
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


def test_without_a_lab_image_the_demo_says_how_to_build_one(engine, monkeypatch):
    monkeypatch.setattr(FakeRuntime, "lab_images", lambda self: [])
    out = seed()
    assert "deploy/test-engine/setup.sh" in out
    assert Image.objects.get(is_default=True).reference == "aivc/lab:cuda12.4"


def test_the_printed_admin_password_must_be_changed(engine):
    out = seed()
    assert "Created admin account 'admin' with password:" in out
    assert User.objects.get(username="admin").must_change_password
    assert "password" not in seed()
