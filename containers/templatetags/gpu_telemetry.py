"""Telemetry pieces other pages include with one line:
`{% load gpu_telemetry %}{% gpu_table %}`, `{% reservation_gpu_usage reservation %}`,
`{% idle_reservations_notice %}`."""

from django import template
from django.utils import timezone

from bookings.models import Reservation
from containers import telemetry_selectors

register = template.Library()


@register.inclusion_tag("containers/_gpu_table.html")
def gpu_table() -> dict:
    return {"gpu_table": telemetry_selectors.gpu_table(now=timezone.now())}


@register.inclusion_tag("containers/_reservation_gpu_usage.html")
def reservation_gpu_usage(reservation: Reservation) -> dict:
    return {
        "reservation": reservation,
        "usage": telemetry_selectors.reservation_gpu_usage(reservation=reservation),
    }


@register.inclusion_tag("containers/_idle_notice.html", takes_context=True)
def idle_reservations_notice(context: template.Context) -> dict:
    user = context["request"].user
    return {"idle_reservations": telemetry_selectors.idle_reservations_for_user(user_id=user.pk)}
