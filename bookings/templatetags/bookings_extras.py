from django import template
from django.utils.translation import gettext_lazy as _

register = template.Library()

# Reservation.Status values as people read them, translated.
STATUS_LABELS = {
    "scheduled": _("Scheduled"),
    "starting": _("Starting"),
    "running": _("Running"),
    "ended": _("Ended"),
    "cancelled": _("Cancelled"),
    "failed": _("Failed"),
    "blocked": _("Blocked"),
}


@register.filter
def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)
