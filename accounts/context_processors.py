from django.http import HttpRequest

from accounts.notification_selectors import unread_notification_count


def unread_notifications(request: HttpRequest) -> dict:
    """The header's badge: how many notifications the signed-in user has not read."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"unread_notifications": unread_notification_count(user_id=user.pk)}
