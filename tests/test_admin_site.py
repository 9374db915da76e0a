"""The admin index lists the lab's tables first and the libraries' after them, named as
libraries; every URL name the portal uses still resolves."""

import pytest
from django.contrib import admin
from django.urls import reverse

from aivc_portal.admin_site import LabAdminSite
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_the_admin_site_is_the_labs():
    assert isinstance(admin.site, LabAdminSite)
    assert reverse("admin:containers_containerevent_changelist") == "/admin/containers/containerevent/"


def test_the_index_puts_the_libraries_after_the_labs_own_tables(client):
    client.force_login(UserFactory(username="keeper", is_staff=True, is_superuser=True))
    response = client.get(reverse("admin:index"))
    labels = [app["app_label"] for app in response.context["app_list"]]
    libraries = labels[-3:]
    assert sorted(libraries) == ["auth", "axes", "django_q"]
    assert {"accounts", "bookings", "containers", "jobs"} <= set(labels[:-3])
    names = {app["app_label"]: str(app["name"]) for app in response.context["app_list"]}
    assert names["axes"].startswith("Library: ")
    assert not names["bookings"].startswith("Library")
