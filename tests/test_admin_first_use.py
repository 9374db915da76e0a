"""Admin as a maintainer first meets it: the lab's name, labels with units, no Add
buttons on records only the portal writes."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_admin_header_names_the_portal(admin_client, settings):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert f"{settings.SITE_NAME} administration" in page
    assert "Django administration" not in page


@pytest.mark.parametrize(
    ("url", "labels"),
    [
        ("admin:accounts_capabilityprofile_add", ["GPUs", "Memory (GiB)", "Work space (GiB)"]),
        ("admin:containers_host_add", ["CPUs", "RAM (GiB)", "Swap (GiB)"]),
    ],
)
def test_admin_labels_say_their_units(admin_client, url, labels):
    page = admin_client.get(reverse(url)).content.decode()
    for label in labels:
        assert f">{label}:</label>" in page
    assert "Gpus" not in page and "Memory gb" not in page


@pytest.mark.parametrize("model", ["containers_containerevent", "bookings_gpuallocation"])
def test_records_the_portal_writes_have_no_add_button(admin_client, model):
    assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403
    changelist = admin_client.get(reverse(f"admin:{model}_changelist")).content.decode()
    assert reverse(f"admin:{model}_add") not in changelist


def test_the_monitor_log_wraps_long_messages(admin_client):
    page = admin_client.get(reverse("admin:containers_containerevent_changelist")).content.decode()
    assert "css/admin.css" in page


def test_shrinking_a_host_below_what_is_booked_warns_and_the_timeline_shows_it(admin_client, client):
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import HostFactory, ReservationFactory, UserFactory

    host = HostFactory(name="gpu-09", cpus=16, ram_gb=64, swap_gb=16)
    now = timezone.now()
    student = UserFactory()
    ReservationFactory(
        user=student,
        host=host,
        cpus=8,
        memory_gb=8,
        start=now + timedelta(hours=1),
        end=now + timedelta(hours=3),
    )
    form = {
        "name": host.name,
        "address": host.address,
        "docker_url": "",
        "cpus": 4,
        "ram_gb": 64,
        "swap_gb": 16,
        "max_work_space_gb": 500,
        "max_backup_space_gb": 200,
        "max_home_space_gb": 50,
        "work_root": host.work_root,
        "dataset_root": host.dataset_root,
        "backup_root": host.backup_root,
        "accepting_bookings": "on",
        "gpus-TOTAL_FORMS": 0,
        "gpus-INITIAL_FORMS": 0,
        "agent-TOTAL_FORMS": 0,
        "agent-INITIAL_FORMS": 0,
        "access-TOTAL_FORMS": 0,
        "access-INITIAL_FORMS": 0,
    }
    answer = admin_client.post(reverse("admin:containers_host_change", args=[host.pk]), form, follow=True)
    shown = [str(message) for message in answer.context["messages"]]
    assert any("gpu-09 now has less than is booked: up to 8 CPUs" in line for line in shown), shown
    client.force_login(student)
    timeline = client.get(reverse("timeline"), {"host": host.pk}).content.decode()
    assert 'class="free-over"' in timeline
    assert "over by 4" in timeline
