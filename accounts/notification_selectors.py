"""Reads of the in-portal notification list."""

from django.db.models import QuerySet

from accounts.models import Notification, UserChannels, default_email_kinds


def unread_notification_count(*, user_id: int) -> int:
    return Notification.objects.filter(user_id=user_id, read_at__isnull=True).count()


def notifications_for_user(*, user_id: int) -> QuerySet[Notification]:
    return Notification.objects.filter(user_id=user_id).order_by("-created_at", "-id")


def email_kinds_for_user(*, user_id: int) -> list[str]:
    """The kinds this user gets by e-mail; the defaults until they choose."""
    kinds = UserChannels.objects.filter(user_id=user_id).values_list("email_kinds", flat=True).first()
    return default_email_kinds() if kinds is None else list(kinds)
