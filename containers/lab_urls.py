from django.urls import path

from containers import lab_views

urlpatterns = [
    path("r/<int:pk>/lab-auth/", lab_views.lab_auth, name="lab-auth"),
    path("r/<int:pk>/lab/", lab_views.lab_entry, name="lab"),
    path("r/<int:pk>/lab/<path:rest>", lab_views.lab_entry),
]
