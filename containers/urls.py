from django.urls import path

from containers import views

urlpatterns = [
    path("gpus/", views.gpu_status, name="gpu-status"),
]
