"""Scheduled work of accounts: telling users what happened. Its own schedule ("notify
users", setup_schedules), apart from the reconcile tick, so a slow mail server never
delays a container."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.grant_services import limit_grants_expire
from accounts.notification_services import notifications_record, notifications_send_email
from containers.notices import notices_due


def send_notifications() -> str:
    now = timezone.now()
    notices = notices_due(
        now=now,
        since=now - timedelta(hours=settings.NOTIFY_LOOKBACK_HOURS),
        ending_within=timedelta(minutes=settings.NOTIFY_ENDING_MINUTES),
        job_near_limit_within=timedelta(minutes=settings.JOB_NEAR_LIMIT_MINUTES),
    )
    recorded = notifications_record(notices=notices, now=now)
    sent = notifications_send_email(now=now)
    return f"{recorded} new notification(s), {sent} e-mail(s) sent"


def expire_limit_grants() -> str:
    """Marks the grants for more that have ended and tells each student (every 10 minutes;
    the grant stops applying at its end either way)."""
    return f"{limit_grants_expire(now=timezone.now())} grant(s) ended"
