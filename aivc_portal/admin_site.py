"""The admin site: the lab's own tables first, the libraries' (django-q's schedules and
tasks, axes' login records, auth's groups) after them, named as libraries, so a maintainer
finds hosts, bookings and accounts at the top of the index and of the side bar."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

# App labels of the tables that come with a library rather than with the lab.
LIBRARY_APPS = ("auth", "axes", "django_q")


class LabAdminSite(admin.AdminSite):
    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        apps = super().get_app_list(request, app_label)
        lab = [app for app in apps if app["app_label"] not in LIBRARY_APPS]
        libraries = [app for app in apps if app["app_label"] in LIBRARY_APPS]
        for app in libraries:
            app["name"] = _("Library: %(name)s") % {"name": app["name"]}
        return lab + libraries


class LabAdminConfig(AdminConfig):
    """django.contrib.admin with the lab's site as `admin.site` (the URL names stay)."""

    default_site = "aivc_portal.admin_site.LabAdminSite"
