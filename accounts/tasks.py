"""Scheduled work of accounts: telling users what happened. Its own schedule ("notify
users", setup_schedules), apart from the reconcile tick, so a slow mail server never
delays a container."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.notification_services import notifications_record, notifications_send_email
from containers.notices import notices_due


def send_notifications() -> str:
    now = timezone.now()
    notices = notices_due(
        now=now,
        since=now - timedelta(hours=settings.NOTIFY_LOOKBACK_HOURS),
        ending_within=timedelta(minutes=settings.NOTIFY_ENDING_MINUTES),
    )
    recorded = notifications_record(notices=notices, now=now)
    sent = notifications_send_email(now=now)
    return f"{recorded} new notification(s), {sent} e-mail(s) sent"
