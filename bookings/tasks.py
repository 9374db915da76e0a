"""Scheduled work of bookings (django-q2): thin, it calls bookings.waitlist_services."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from bookings.waitlist_services import waitlist_book_due
from containers.locks import exclusive
from jobs.selectors import priority_usage

LOCK_WAIT_S = 30


def book_waiting_requests(now: datetime | None = None) -> str:
    """One waitlist tick: every minute, and queued right after capacity is given back (a
    cancel, a release). Two at once take turns on a lock, so one request is never booked
    twice (each booking also re-checks, under the host lock, that it is still waiting)."""
    with exclusive("bookings:waitlist", wait_s=LOCK_WAIT_S) as acquired:
        if not acquired:
            return "another waitlist tick held the lock"
        now = now or timezone.now()
        return str(waitlist_book_due(now=now, usage=priority_usage(now=now)))
