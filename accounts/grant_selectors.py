"""Reads of requests for more and of the grants they became. A grant is active while
starts_at <= now < ends_at: every reader below asks for active grants only, so a grant
ends by itself at its end, whether or not the expiry task has run yet."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Q, QuerySet

from accounts.models import LimitGrant, LimitKind, LimitRequest

# The usage limits a grant of kind BUDGET or CAPS raises (bookings.limits reads them).
RAISED_FIELDS = {
    LimitKind.BUDGET: ("gpu_hours_per_week",),
    LimitKind.CAPS: ("gpus_at_once", "cpus_at_once", "memory_gb_at_once"),
}


def active_grant_filter(*, now: datetime, prefix: str = "") -> Q:
    """The one definition of "active", for querysets of grants (or, with a prefix such as
    "limit_grants__", of rows joined to them)."""
    return Q(**{f"{prefix}starts_at__lte": now, f"{prefix}ends_at__gt": now})


def active_grants(
    *, now: datetime, user_ids: Iterable[int] | None = None, kinds: Iterable[str] | None = None
) -> QuerySet[LimitGrant]:
    grants = LimitGrant.objects.filter(active_grant_filter(now=now))
    if user_ids is not None:
        grants = grants.filter(user_id__in=list(user_ids))
    if kinds is not None:
        grants = grants.filter(kind__in=list(kinds))
    return grants


# Written by hand: every booking reads its user's grants (bookings.limits.limits_for), and
# the ORM's compile of even this filter cost more Python than the query.
_GRANTS_SQL = """
SELECT * FROM accounts_limitgrant
WHERE user_id IN ({users}) AND starts_at <= %s AND ends_at > %s
ORDER BY ends_at, id
"""


def grants_by_user(*, user_ids: Iterable[int], now: datetime) -> dict[int, list[LimitGrant]]:
    """Each user's active grants (`active_grant_filter`), from one query, those ending last
    at the end."""
    user_ids = list(user_ids)
    grants: dict[int, list[LimitGrant]] = defaultdict(list)
    if not user_ids:
        return grants
    moment = connection.ops.adapt_datetimefield_value(now)
    sql = _GRANTS_SQL.format(users=", ".join(["%s"] * len(user_ids)))
    for grant in LimitGrant.objects.raw(sql, [*user_ids, moment, moment]):
        grants[grant.user_id].append(grant)
    return grants


def granted_profile_id(grants: Iterable[LimitGrant]) -> int | None:
    """The profile one user's active grants give them (two at once: the one ending last)."""
    profiles = [grant.profile_id for grant in grants if grant.kind == LimitKind.PROFILE]
    return profiles[-1] if profiles else None


def raised_usage_limits(values: dict[str, object], grants: Iterable[LimitGrant]) -> dict[str, object]:
    """The usage limits `values` (None: no limit) raised by the grants: each granted value
    replaces a smaller one. A grant never turns "no limit" into a limit."""
    raised = dict(values)
    for grant in grants:
        for field in RAISED_FIELDS.get(grant.kind, ()):
            granted, current = getattr(grant, field), raised.get(field)
            if granted is not None and current is not None and granted > current:
                raised[field] = granted
    return raised


def priority_factors(*, now: datetime, user_ids: Iterable[int] | None = None) -> dict[int, float]:
    """The factor a priority boost puts on each boosted user's fair-share usage (the
    smallest, if several); users without a boost are absent (factor 1)."""
    factors: dict[int, Decimal] = {}
    for user_id, factor in active_grants(now=now, user_ids=user_ids, kinds=[LimitKind.BOOST]).values_list(
        "user_id", "usage_factor"
    ):
        factors[user_id] = min(factor, factors.get(user_id, factor))
    return {user_id: float(factor) for user_id, factor in factors.items()}


def limit_requests_for_user(*, user_id: int) -> QuerySet[LimitRequest]:
    return (
        LimitRequest.objects.filter(user_id=user_id)
        .select_related("profile", "grant")
        .order_by("-created_at", "-id")
    )


def active_grants_for_user(*, user_id: int, now: datetime) -> QuerySet[LimitGrant]:
    return active_grants(now=now, user_ids=[user_id]).select_related("profile").order_by("ends_at")
