"""Personal access tokens: made, checked and revoked here. A token reads
`aivc_<prefix><secret>`; only its SHA-256 is stored, and it is shown to its owner once."""

import hashlib
import hmac
import ipaddress
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import ApiToken, User

TOKEN_PREFIX = "aivc_"  # noqa: S105 (a marker that says what the text is, not a secret)
MAX_TOKENS_PER_USER = 50
# last_used_at is written at most this often, so a busy script does not write every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    scope: str = ApiToken.Scope.BOOK,
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Makes a token for `user`; returns the row and the token text, which is never
    stored and so can be shown only now. Without an expiry it lives API_TOKEN_DEFAULT_DAYS."""
    now = now or timezone.now()
    name = (name or "").strip()
    if expires_at is None:
        expires_at = now + timedelta(days=settings.API_TOKEN_DEFAULT_DAYS)
    errors = {}
    if not name:
        errors["name"] = "Give the token a name, e.g. the machine it is for."
    elif len(name) > 100:
        errors["name"] = "A token name is at most 100 characters."
    if expires_at <= now:
        errors["expires_at"] = "The expiry must be in the future."
    elif expires_at > now + timedelta(days=settings.API_TOKEN_MAX_DAYS):
        errors["expires_at"] = f"A token lives at most {settings.API_TOKEN_MAX_DAYS} days."
    if scope not in ApiToken.Scope.values:
        errors["scope"] = "Choose what the token may do: " + ", ".join(ApiToken.Scope.values) + "."
    if errors:
        raise ValidationError(errors, code="invalid")
    usable = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
    if usable.count() >= MAX_TOKENS_PER_USER:
        raise ValidationError(
            f"You have {MAX_TOKENS_PER_USER} tokens already; revoke one first.", code="too_many_tokens"
        )
    body = secrets.token_urlsafe(32)
    raw = f"{TOKEN_PREFIX}{body}"
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=body[: ApiToken.PREFIX_LENGTH],
        key_hash=_digest(raw),
        expires_at=expires_at,
        scope=scope,
    )
    return token, raw


def api_token_authenticate(
    *, raw: str, now: datetime | None = None, address: str | None = None
) -> ApiToken | None:
    """The usable token this text is, with its user, or None. Notes when, and from which
    address, it was last used (shown on the owner's profile page)."""
    now = now or timezone.now()
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
        return None
    prefix = raw[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + ApiToken.PREFIX_LENGTH]
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.key_hash, _digest(raw)):
        return None
    if not token.is_usable(now) or not token.user.is_active:
        return None
    address = _valid_address(address)
    stale = token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION
    if stale or (address and address != token.last_used_from):
        token.last_used_at = now
        token.last_used_from = address or token.last_used_from
        ApiToken.objects.filter(pk=token.pk).update(
            last_used_at=token.last_used_at, last_used_from=token.last_used_from
        )
    return token


def _valid_address(address: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((address or "").strip()))
    except ValueError:
        return None


def api_tokens_revoke_all(*, user: User, now: datetime | None = None) -> int:
    """Revokes every token of the account: its password changed or it was deactivated, so a
    token that leaked earlier must not outlive that (accounts/signals.py calls this)."""
    usable = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
    return usable.update(revoked_at=now or timezone.now())


def api_token_revoke(*, token: ApiToken, now: datetime | None = None) -> ApiToken:
    """Revokes a token for good; revoking twice keeps the first time."""
    if token.revoked_at is None:
        token.revoked_at = now or timezone.now()
        token.save(update_fields=["revoked_at"])
    return token
