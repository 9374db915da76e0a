from django.urls import path

from containers.telemetry import views

urlpatterns = [
    path("gpus/", views.gpu_status, name="gpu-status"),
]
