"""Login throttling, built on django-axes (see docs/security.md for why axes rather than a
cache of our own: its counts live in the database, so every gunicorn worker and the admin
see the same numbers, and a maintainer unlocks an account from admin).

The rules (docs/security.md, "Logins"), written so that nobody can turn them on someone else:
- wrong passwords pause one pair, account + client address: LOGIN_FAILURE_LIMIT of them
  pause that account from that address for LOGIN_LOCKOUT_MINUTES, while its owner logs in
  from anywhere else;
- an address with many failures (a campus NAT, or a spray) is slowed, never locked: each
  account that already failed from it waits a few seconds (doubling with the address's
  failures, at most LOGIN_SLOW_MAX_SECONDS) before its next try; an account with no failure
  from it, a classmate behind the same NAT, is not delayed at all;
- LOGIN_FLOOD_THRESHOLD failures from one address, or at one account, tell the maintainers,
  once per flood.

A paused or slowed attempt is refused by the authentication backend before any password is
hashed, so a flood costs a few queries each, not an Argon2 hash."""

import hashlib
import logging
import math
from datetime import datetime, timedelta
from types import SimpleNamespace

from axes.handlers.database import AxesDatabaseHandler
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone, translation
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.backends import directory_was_down
from accounts.models import Notification, NotificationKind, User
from accounts.notification_services import notifications_record

logger = logging.getLogger(__name__)
# Set on a request refused because its account and address must wait (seconds to wait).
WAIT_ATTRIBUTE = "aivc_login_wait_seconds"
# A flood that goes on is reported again after this long.
FLOOD_NOTICE_QUIET = timedelta(hours=24)


def login_username(request: HttpRequest, credentials: dict | None) -> str:
    """The account id as the portal looks it up (trimmed, lower-case), so `Alice` and
    `alice ` count against the same account."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    return username.strip().lower()


def client_ip(request: HttpRequest) -> str:
    """The client's address. Behind the TLS proxy every request comes from the proxy, so
    the address the proxy saw is taken: nginx appends it last to X-Forwarded-For
    (`$proxy_add_x_forwarded_for`); what a client wrote earlier in that header is ignored."""
    if settings.BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "")


def _failures(attempts: QuerySet) -> int:
    return attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0


def _recent(now: datetime) -> QuerySet:
    return AccessAttempt.objects.filter(attempt_time__gte=now - settings.AXES_COOLOFF_TIME)


def slow_down_seconds(*, address_failures: int) -> int:
    """How long an account that failed from an address waits between tries from it: none
    below LOGIN_ADDRESS_SLOW_AFTER failures from the address, then 2 s, doubling with every
    further LOGIN_ADDRESS_SLOW_AFTER, up to LOGIN_SLOW_MAX_SECONDS."""
    steps = address_failures // settings.LOGIN_ADDRESS_SLOW_AFTER
    if steps == 0:
        return 0
    return min(settings.LOGIN_SLOW_MAX_SECONDS, 2 ** min(steps, 30))


def login_wait_seconds(*, username: str, address: str, now: datetime) -> int:
    """Seconds this account must still wait before a try from this address (0: go ahead)."""
    from_address = _recent(now).filter(ip_address=address)
    delay = slow_down_seconds(address_failures=_failures(from_address))
    if delay == 0:
        return 0
    last = from_address.filter(username=username).aggregate(last=Max("attempt_time"))["last"]
    if last is None:
        if User.objects.filter(username=username).exists():
            return 0  # an account that did nothing wrong from here: a classmate on the NAT
        # Ids that are no account cost a hash each; from a busy address they share one pace.
        last = from_address.aggregate(last=Max("attempt_time"))["last"]
    remaining = delay - (now - last).total_seconds()
    return math.ceil(remaining) if remaining > 0 else 0


def _admin_attempts_link(**query: str) -> str:
    try:
        return f"{reverse('admin:axes_accessattempt_changelist')}?{urlencode(query)}"
    except NoReverseMatch:
        return ""


def login_flood_report(*, username: str, address: str, now: datetime) -> int:
    """Tells the active staff when the failures counted against this address, or at this
    account, within the lockout window reach LOGIN_FLOOD_THRESHOLD: one notice per flood (and
    again after a day if it goes on), never one per attempt. Returns notices recorded."""
    recent = _recent(now)
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    floods = []
    by_address = recent.filter(ip_address=address)
    failures = _failures(by_address)
    if failures >= settings.LOGIN_FLOOD_THRESHOLD:
        accounts = by_address.values("username").distinct().count()
        floods.append(
            (
                f"address {address}",
                gettext_noop("Flood of failed logins from %(address)s"),
                gettext_noop(
                    "%(failures)d failed logins from %(address)s at %(accounts)d accounts "
                    "within %(minutes)d minutes."
                ),
                {"failures": failures, "address": address, "accounts": accounts, "minutes": minutes},
                _admin_attempts_link(ip_address=address),
            )
        )
    at_account = recent.filter(username=username)
    failures = _failures(at_account)
    if username and failures >= settings.LOGIN_FLOOD_THRESHOLD:
        addresses = at_account.values("ip_address").distinct().count()
        floods.append(
            (
                f"account {username}",
                gettext_noop("Flood of failed logins at account %(username)s"),
                gettext_noop(
                    "%(failures)d failed logins at account %(username)s from %(addresses)d addresses "
                    "within %(minutes)d minutes."
                ),
                {"failures": failures, "username": username, "addresses": addresses, "minutes": minutes},
                _admin_attempts_link(username=username),
            )
        )
    recorded = 0
    for subject, title, body, values, link in floods:
        digest = hashlib.sha256(subject.encode()).hexdigest()[:20]
        prefix = f"{NotificationKind.LOGIN_FLOOD}:{digest}:"
        if Notification.objects.filter(
            key__startswith=prefix, created_at__gte=now - FLOOD_NOTICE_QUIET
        ).exists():
            continue
        # Two workers crossing the threshold at once write the same keys; one row stays.
        bucket = int(now.timestamp() // FLOOD_NOTICE_QUIET.total_seconds())
        maintainers = User.objects.filter(is_staff=True, is_active=True).values_list("pk", "language")
        logger.warning("Login flood: %s", body % values)
        notices = []
        for user_id, language in maintainers:
            # Each maintainer reads it in their own language.
            with translation.override(language or settings.LANGUAGE_CODE):
                said = (_(title) % values, _(body) % values)
            # The shape notifications_record reads (containers.notices.Notice sits above).
            notices.append(
                SimpleNamespace(
                    user_id=user_id,
                    kind=NotificationKind.LOGIN_FLOOD,
                    key=f"{prefix}{bucket}:user-{user_id}",
                    title=said[0],
                    body=said[1],
                    link=link,
                    at=now,
                )
            )
        recorded += notifications_record(notices=notices, now=now)
    return recorded


class LabLoginHandler(AxesDatabaseHandler):
    """axes' database handler with the portal's rules (module docstring). Its lockout
    parameter is the pair (settings.AXES_LOCKOUT_PARAMETERS), the slow-down is added here."""

    def is_locked(self, request, credentials: dict | None = None) -> bool:
        if super().is_locked(request, credentials):
            return True
        wait = login_wait_seconds(
            username=login_username(request, credentials),
            address=request.axes_ip_address,
            now=request.axes_attempt_time or timezone.now(),
        )
        if wait:
            setattr(request, WAIT_ATTRIBUTE, wait)
            return True
        return False

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        if request is not None and self._nothing_was_guessed(request, credentials):
            return
        refused = request is not None and getattr(request, "axes_locked_out", False)
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or refused:
            return
        # In the lab's language, not in whatever language the attacker's browser asked for.
        with translation.override(settings.LANGUAGE_CODE):
            login_flood_report(
                username=login_username(request, credentials),
                address=request.axes_ip_address,
                now=request.axes_attempt_time or timezone.now(),
            )

    @staticmethod
    def _nothing_was_guessed(request, credentials: dict | None) -> bool:
        """While the directory is down, a login at an account without a local password
        checked no password at all: counting it would pause students who retry during the
        outage once the directory is back."""
        if not directory_was_down(request):
            return False
        user = User.objects.filter(username=login_username(request, credentials)).first()
        return user is None or not user.has_usable_password()


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """The login page's answer while paused or slowed: what happened, for how long, who can
    help. The API's password login (`aivc login`) gets the same in the API's error shape."""
    wait = getattr(request, WAIT_ATTRIBUTE, None)
    if wait:
        detail = _(
            "Too many failed logins from your network: wait %(seconds)d seconds before trying "
            "this account again."
        ) % {"seconds": wait}
    else:
        detail = _(
            "Too many failed logins: logging in to this account from your address is paused for "
            "%(minutes)d minutes; log in from another network, or a maintainer can unlock it sooner."
        ) % {"minutes": settings.LOGIN_LOCKOUT_MINUTES}
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": detail, "code": "locked_out", "errors": {}}, status=429)
    else:
        context = {
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "cooloff_minutes": settings.LOGIN_LOCKOUT_MINUTES,
            "wait_seconds": wait,
        }
        response = render(request, "accounts/locked_out.html", context, status=429)
    response["Retry-After"] = str(wait or settings.LOGIN_LOCKOUT_MINUTES * 60)
    return response
