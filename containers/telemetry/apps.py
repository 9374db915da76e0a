from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "containers.telemetry"
    label = "telemetry"
    verbose_name = "GPU telemetry"
