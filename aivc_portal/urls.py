from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import views as account_views
from aivc_portal.api import api_not_found
from aivc_portal.health import healthz
from aivc_portal.metrics import metrics

admin.site.site_header = format_lazy(_("{site} administration"), site=settings.SITE_NAME)
admin.site.site_title = format_lazy(_("{site} admin"), site=settings.SITE_NAME)
admin.site.index_title = _("Hosts, bookings and accounts")

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    # Before Django's own: the switch also stores a signed-in user's choice (same name).
    path("i18n/setlang/", account_views.switch_language, name="set_language"),
    path("i18n/", include("django.conf.urls.i18n")),
    # The JSON API: each app keeps its endpoints in its own api.py (docs/api.md).
    path("api/v1/", include("accounts.api")),
    path("api/v1/", include("bookings.api")),
    path("api/v1/", include("jobs.api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", api_not_found),
    path("", include("bookings.urls")),
    path("", include("containers.telemetry.urls")),
    path("", include("containers.urls")),
    path("", include("jobs.urls")),
]
