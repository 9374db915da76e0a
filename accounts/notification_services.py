"""Notifications: recorded once per event (the unique key), shown in the portal, and
e-mailed to users who chose that kind. A send is claimed before it is attempted, so a
crash or a second worker never sends one twice (at most once, by design)."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db.models import QuerySet
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import Notification, User, UserChannels, default_email_kinds

logger = logging.getLogger(__name__)
EMAIL_BATCH = 200


def notifications_record(*, notices: Iterable, now: datetime) -> int:
    """Stores the notices not stored yet (by key); returns how many are new. Each is marked
    for e-mail when its user has an address and chose its kind."""
    notices = list(notices)
    if not notices:
        return 0
    keys = [notice.key for notice in notices]
    known = set(Notification.objects.filter(key__in=keys).values_list("key", flat=True))
    fresh = {notice.key: notice for notice in notices if notice.key not in known}
    if not fresh:
        return 0
    user_ids = {notice.user_id for notice in fresh.values()}
    emails = dict(User.objects.filter(pk__in=user_ids).values_list("pk", "email"))
    chosen = dict(UserChannels.objects.filter(user_id__in=user_ids).values_list("user_id", "email_kinds"))
    rows = []
    for notice in fresh.values():
        wants = notice.kind in chosen.get(notice.user_id, default_email_kinds())
        rows.append(
            Notification(
                user_id=notice.user_id,
                kind=notice.kind,
                key=notice.key[:200],
                title=notice.title[:200],
                body=notice.body,
                link=notice.link[:500],
                created_at=now,
                email=Notification.Email.PENDING
                if wants and emails.get(notice.user_id)
                else Notification.Email.SKIPPED,
            )
        )
    # A second tick racing this one inserts the same keys; the unique index drops them.
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@dataclass(frozen=True)
class Notice:
    """One thing to tell one user, from a service that decided it (a waiting booking was
    booked, a request was answered); the lifecycle's notices are read by containers.notices."""

    user_id: int
    kind: str
    key: str
    title: str
    body: str = ""
    link: str = ""


def notify(*, notice: Notice, now: datetime) -> bool:
    """Records one notice, in the caller's transaction (so it exists only if what it tells
    happened); the notify tick e-mails it. False when its key was recorded before."""
    return notifications_record(notices=[notice], now=now) == 1


def _message(notification: Notification, *, connection) -> EmailMessage:
    link = notification.link
    if link.startswith("/"):
        link = settings.PORTAL_URL + link
    # The title and body were written in the user's language when recorded; the frame too.
    with translation.override(notification.user.preferred_language):
        footer = _("%(site)s: choose which notices you get by e-mail on your profile page.") % {
            "site": settings.SITE_NAME
        }
    body = f"{notification.body}\n\n{link}\n\n-- \n{footer}"
    return EmailMessage(
        subject=f"[{settings.SITE_NAME}] {notification.title}",
        body=body,
        to=[notification.user.email],
        connection=connection,
    )


def notifications_send_email(*, now: datetime | None = None) -> int:
    """Sends the pending e-mails; returns how many went out."""
    now = now or timezone.now()
    pending = list(
        Notification.objects.filter(email=Notification.Email.PENDING)
        .select_related("user")
        .order_by("created_at", "id")[:EMAIL_BATCH]
    )
    if not pending:
        return 0
    sent = 0
    with get_connection(fail_silently=False) as connection:
        for notification in pending:
            claimed = Notification.objects.filter(
                pk=notification.pk, email=Notification.Email.PENDING
            ).update(email=Notification.Email.SENDING)
            if not claimed:
                continue
            try:
                _message(notification, connection=connection).send()
            except Exception:
                logger.exception(
                    "Could not e-mail notification %s to user %s", notification.pk, notification.user_id
                )
                Notification.objects.filter(pk=notification.pk).update(email=Notification.Email.FAILED)
                continue
            Notification.objects.filter(pk=notification.pk).update(
                email=Notification.Email.SENT, emailed_at=now
            )
            sent += 1
    return sent


def notifications_mark_read(
    *, user: User, ids: Iterable[int] | None = None, now: datetime | None = None
) -> int:
    """Marks the user's notifications read (all, or those ids); returns how many changed."""
    rows: QuerySet[Notification] = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    return rows.update(read_at=now or timezone.now())
