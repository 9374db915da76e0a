"""A user's delivery settings: which notifications go by e-mail, and the secret calendar
feed URL. The feed token is an HMAC of the user id and a per-user salt under the site's
key: nothing secret is stored, and a reset (a new salt) makes the old URL stop working."""

import hmac
import secrets

from django.core.exceptions import ValidationError
from django.utils.crypto import salted_hmac

from accounts.models import NotificationKind, User, UserChannels

FEED_KEY_SALT = "aivc.calendar-feed"


def _channels(user: User) -> UserChannels:
    channels, _created = UserChannels.objects.get_or_create(user=user)
    return channels


def email_kinds_set(*, user: User, kinds: list[str]) -> UserChannels:
    unknown = sorted(set(kinds) - set(NotificationKind.values))
    if unknown:
        raise ValidationError({"email_kinds": f"Unknown notification kind: {', '.join(unknown)}."})
    channels = _channels(user)
    channels.email_kinds = [kind for kind in NotificationKind.values if kind in kinds]
    channels.save(update_fields=["email_kinds"])
    return channels


def calendar_feed_token(*, user: User) -> str:
    """The secret part of the user's feed URL: `<user id>.<hmac>`."""
    channels = _channels(user)
    if not channels.calendar_salt:
        return calendar_feed_reset(user=user)
    digest = salted_hmac(FEED_KEY_SALT, f"{user.pk}:{channels.calendar_salt}", algorithm="sha256")
    return f"{user.pk}.{digest.hexdigest()[:40]}"


def calendar_feed_reset(*, user: User) -> str:
    """A new feed URL; the old one answers 404 from now on."""
    channels = _channels(user)
    channels.calendar_salt = secrets.token_hex(16)
    channels.save(update_fields=["calendar_salt"])
    return calendar_feed_token(user=user)


def calendar_feed_user(*, token: str) -> User | None:
    """The active user a feed token belongs to, or None (compared in constant time)."""
    user_id, _dot, _digest = token.partition(".")
    if not (user_id.isascii() and user_id.isdigit() and len(user_id) <= 18):
        return None
    channels = UserChannels.objects.select_related("user").filter(user_id=int(user_id)).first()
    if channels is None or not channels.calendar_salt or not channels.user.is_active:
        return None
    expected = calendar_feed_token(user=channels.user)
    return channels.user if hmac.compare_digest(expected.encode(), token.encode()) else None
