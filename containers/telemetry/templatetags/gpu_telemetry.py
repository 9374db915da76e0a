"""Telemetry pieces other pages include with one line. The tags only lay out values the
view read through `containers.telemetry.selectors`; they never query:
`{% gpu_table gpu_table %}`, `{% reservation_gpu_usage usage %}`,
`{% idle_reservations_notice idle_reservations %}`."""

from collections.abc import Iterable

from django import template

from bookings.models import Reservation
from containers.telemetry.selectors import GpuTable, ReservationGpuUsage

register = template.Library()


@register.inclusion_tag("telemetry/_gpu_table.html")
def gpu_table(table: GpuTable) -> dict:
    return {"gpu_table": table}


@register.inclusion_tag("telemetry/_reservation_gpu_usage.html")
def reservation_gpu_usage(usage: ReservationGpuUsage) -> dict:
    return {"usage": usage}


@register.inclusion_tag("telemetry/_idle_notice.html")
def idle_reservations_notice(reservations: Iterable[Reservation]) -> dict:
    return {"idle_reservations": reservations}
