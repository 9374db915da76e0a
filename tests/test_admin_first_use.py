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
