import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from accounts.grant_selectors import granted_profile_id, grants_by_user
from accounts.models import CapabilityProfile, LimitGrant, LimitKind, User
from containers.models import Host


@dataclass(frozen=True)
class Capability:
    cpus: Decimal
    memory_gb: int
    gpus: int
    work_space_gb: int
    backup_space_gb: int
    home_space_gb: int
    job_time_limit_minutes: int
    queued_jobs: int


def default_profile() -> CapabilityProfile | None:
    return CapabilityProfile.objects.filter(is_default=True).first()


def _host_limit(host: Host, field: str) -> Decimal | int:
    """One field of the host maximum; only `gpus` costs a query (the GPUs in service)."""
    if field == "gpus":
        return len(host.active_gpus)
    limits = {
        "cpus": Decimal(host.cpus),
        "memory_gb": host.memory_gb,
        "work_space_gb": host.max_work_space_gb,
        "backup_space_gb": host.max_backup_space_gb,
        "home_space_gb": host.max_home_space_gb,
        "job_time_limit_minutes": settings.JOB_MAX_TIME_LIMIT_MINUTES,
        "queued_jobs": settings.JOB_MAX_QUEUED,
    }
    return limits[field]


def host_maximum(*, host: Host) -> Capability:
    return Capability(**{field: _host_limit(host, field) for field in CapabilityProfile.LIMIT_FIELDS})


# The profiles a user's maxima read: the default, their own, and one a grant gives them for
# now, with when that grant ends. Written by hand: capability_for sits on every booking's
# path, and the ORM's version of this (a subquery and an annotation) cost four times the
# Python of the whole query.
_PROFILES_SQL = """
SELECT p.*, (
    SELECT MAX(g.ends_at) FROM accounts_limitgrant g
    WHERE g.profile_id = p.id AND g.user_id = %s AND g.kind = %s AND g.starts_at <= %s AND g.ends_at > %s
  ) AS granted_until
FROM accounts_capabilityprofile p
WHERE p.is_default OR p.id = %s OR p.id IN (
    SELECT g.profile_id FROM accounts_limitgrant g
    WHERE g.user_id = %s AND g.kind = %s AND g.starts_at <= %s AND g.ends_at > %s
  )
"""


def capability_for(*, user: User, host: Host, now: datetime | None = None) -> Capability:
    """The user's effective maxima on `host`: the user's profile (or the one a grant gives
    them for now), where a field is null the default profile, where that is null too (or
    there is no default) the host maximum. One query: the default, own and granted profiles."""
    moment = connection.ops.adapt_datetimefield_value(now or timezone.now())
    grant = [user.pk, LimitKind.PROFILE, moment, moment]
    profiles = list(
        CapabilityProfile.objects.raw(_PROFILES_SQL, [*grant, user.capability_profile_id or 0, *grant])
    )
    default = next((profile for profile in profiles if profile.is_default), None)
    granted = [profile for profile in profiles if profile.granted_until is not None]
    own = max(granted, key=lambda profile: profile.granted_until) if granted else None
    own = own or next((profile for profile in profiles if profile.pk == user.capability_profile_id), None)
    return _effective(own=own, default=default, host=host)


def profile_ids_for(
    *, users: Iterable[User], now: datetime, grants: dict[int, list[LimitGrant]] | None = None
) -> dict[int, int | None]:
    """Each user's profile id for now: one a grant gives them, else their own (None: the
    default). Every reader of a user's limits (maxima, usage limits) goes through this;
    `grants` (grants_by_user) when the caller read them already."""
    users = list(users)
    if grants is None:
        grants = grants_by_user(user_ids=[user.pk for user in users], now=now)
    return {
        user.pk: granted_profile_id(grants.get(user.pk, ())) or user.capability_profile_id for user in users
    }


def capabilities_for(
    *, users: Iterable[User], hosts: Iterable[Host], now: datetime | None = None
) -> dict[tuple[int, int], Capability]:
    """capability_for for every (user id, host id) pair, from one read of the grants and one
    of the profiles: the job scheduler asks for many users at once."""
    users, hosts = list(users), list(hosts)
    profile_ids = profile_ids_for(users=users, now=now or timezone.now())
    wanted = {profile_id for profile_id in profile_ids.values() if profile_id}
    profiles = list(CapabilityProfile.objects.filter(Q(is_default=True) | Q(pk__in=wanted)))
    by_id = {profile.pk: profile for profile in profiles}
    default = next((profile for profile in profiles if profile.is_default), None)
    return {
        (user.pk, host.pk): _effective(own=by_id.get(profile_ids[user.pk]), default=default, host=host)
        for user in users
        for host in hosts
    }


# What a request form suggests before the user types anything, lowered to what the user
# may ask and the host has (a 2 GiB profile is not offered 4 GiB, a host without GPUs 1 GPU).
SUGGESTED_REQUEST = {"cpus": Decimal(1), "memory_gb": 4, "gpu_count": 1}


def request_defaults(*, user: User, hosts: Iterable[Host]) -> dict[str, Decimal | int]:
    """The form's suggested CPUs, memory and GPUs: SUGGESTED_REQUEST, each at most the
    largest the user may ask on one of `hosts` (their maximum there, and the host's own
    size). No host: the plain suggestion."""
    hosts = list(hosts)
    if not hosts:
        return dict(SUGGESTED_REQUEST)
    capabilities = capabilities_for(users=[user], hosts=hosts)
    ceiling = {"cpus": Decimal(0), "memory_gb": 0, "gpu_count": 0}
    for host in hosts:
        capability = capabilities[(user.pk, host.pk)]
        ceiling["cpus"] = max(ceiling["cpus"], min(capability.cpus, Decimal(host.cpus)))
        ceiling["memory_gb"] = max(ceiling["memory_gb"], min(capability.memory_gb, host.memory_gb))
        ceiling["gpu_count"] = max(ceiling["gpu_count"], min(capability.gpus, len(host.active_gpus)))
    return {field: min(value, ceiling[field]) for field, value in SUGGESTED_REQUEST.items()}


def _effective(*, own: CapabilityProfile | None, default: CapabilityProfile | None, host: Host) -> Capability:
    values = {}
    for field in CapabilityProfile.LIMIT_FIELDS:
        values[field] = next(
            (getattr(p, field) for p in (own, default) if p is not None and getattr(p, field) is not None),
            None,
        )
    values = {field: _host_limit(host, field) if v is None else v for field, v in values.items()}
    values["cpus"] = plain_decimal(Decimal(values["cpus"]))
    return Capability(**values)


def plain_decimal(number: Decimal) -> Decimal:
    """8.00 -> 8 and 2.50 -> 2.5, so limits print the way people write them."""
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number.normalize()


# A socket in state LISTEN in /proc/net/tcp{,6} (column `st`, hex 0A).
TCP_LISTEN = "0A"


def ports_listening_here() -> set[int]:
    """TCP ports something listens on on this machine: on a one-server lab the portal runs
    beside the engine, and a port another service holds would fail every launch on it.
    Unreadable (not Linux): none known, the launch's own port-in-use error stays the guard."""
    ports: set[int] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == TCP_LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def first_free_forward_port(*, any_free: bool = False) -> int:
    """The lowest port in PORT_RANGE no account holds and nothing listens on here, or with
    `any_free` a random free one (for a retry after losing a race for the lowest); a full
    range is a clear error."""
    port_range = settings.PORT_RANGE
    taken = set(
        User.objects.filter(forward_port__gte=port_range.start, forward_port__lt=port_range.stop).values_list(
            "forward_port", flat=True
        )
    )
    taken |= ports_listening_here()
    free = [port for port in port_range if port not in taken]
    if not free:
        raise ValidationError(
            f"No free forward port left in {port_range.start}-{port_range.stop - 1}; "
            "ask a maintainer to widen PORT_RANGE.",
            code="no_free_port",
        )
    return random.choice(free) if any_free else free[0]  # noqa: S311 - not a secret
