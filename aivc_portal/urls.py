from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from aivc_portal.api import api_not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
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
    path("", include("jobs.urls")),
]
