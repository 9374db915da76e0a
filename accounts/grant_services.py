"""Requests for more: a student asks (a bigger weekly GPU-hour budget or caps at once, another
capability profile, a fair-share priority boost) until a date, with a reason; a maintainer
approves, which makes a time-limited grant, or denies, with a note. The student is told
each answer, and when a grant ends. Grants apply where limits are computed
(`accounts.selectors.capability_for`, `bookings.limits.limits_for`, the fair-share order)."""

from datetime import date, datetime, time, timedelta
from decimal import Decimal, DecimalException

from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import CapabilityProfile, LimitGrant, LimitKind, LimitRequest, NotificationKind, User
from accounts.notification_services import Notice, notify

# A grant is for a deadline, not a new normal: longer needs a profile change in admin.
MAX_GRANT_DAYS = 120
MAX_PENDING_PER_USER = 5
MAX_REASON = 2000
# Requests are small numbers; anything this big is a typo.
MAX_VALUE = Decimal(100_000)
Status = LimitRequest.Status


def _positive(value: object, *, field: str, whole: bool) -> Decimal | int | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value).strip())
    except (DecimalException, ValueError):
        raise ValidationError({field: "Enter a number."}, code="invalid") from None
    if not number.is_finite() or number <= 0:
        raise ValidationError({field: "Enter a number above 0."}, code="invalid")
    if number >= MAX_VALUE:
        raise ValidationError({field: "That is far more than the lab has."}, code="invalid")
    if whole:
        if number != number.to_integral_value():
            raise ValidationError({field: "Enter a whole number."}, code="invalid")
        return int(number)
    return number.quantize(Decimal("0.1") if field == "gpu_hours_per_week" else Decimal("0.01"))


def ends_at_for(until: date) -> datetime:
    """A grant "until" a date lasts through that day, in the lab's time zone."""
    return timezone.make_aware(datetime.combine(until + timedelta(days=1), time()))


def _check_until(until: object, *, now: datetime) -> datetime:
    if not isinstance(until, date) or isinstance(until, datetime):
        raise ValidationError({"until": "Give the last day as YYYY-MM-DD."}, code="invalid")
    ends_at = ends_at_for(until)
    if ends_at <= now:
        raise ValidationError({"until": "The last day must not be in the past."}, code="until_past")
    if ends_at - now > timedelta(days=MAX_GRANT_DAYS + 1):
        raise ValidationError(
            {"until": f"Ask for at most {MAX_GRANT_DAYS} days; for longer, ask for a profile change."},
            code="until_too_far",
        )
    return ends_at


def _asked_values(
    *, kind: str, user: User, gpu_hours_per_week, gpus_at_once, cpus_at_once, memory_gb_at_once, profile
) -> dict:
    """The values of one kind of request, checked; the other kinds' values must be empty."""
    values = {
        "gpu_hours_per_week": None,
        "gpus_at_once": None,
        "cpus_at_once": None,
        "memory_gb_at_once": None,
        "profile": None,
    }
    if kind == LimitKind.BUDGET:
        values["gpu_hours_per_week"] = _positive(gpu_hours_per_week, field="gpu_hours_per_week", whole=False)
        if values["gpu_hours_per_week"] is None:
            raise ValidationError({"gpu_hours_per_week": "How many GPU-hours per week?"}, code="required")
    elif kind == LimitKind.CAPS:
        values["gpus_at_once"] = _positive(gpus_at_once, field="gpus_at_once", whole=True)
        values["cpus_at_once"] = _positive(cpus_at_once, field="cpus_at_once", whole=False)
        values["memory_gb_at_once"] = _positive(memory_gb_at_once, field="memory_gb_at_once", whole=True)
        if all(values[field] is None for field in ("gpus_at_once", "cpus_at_once", "memory_gb_at_once")):
            raise ValidationError("Give at least one cap: GPUs, CPUs or memory at once.", code="required")
    elif kind == LimitKind.PROFILE:
        if profile in (None, ""):
            raise ValidationError({"profile": "Choose a profile."}, code="required")
        if not isinstance(profile, CapabilityProfile):
            profile = CapabilityProfile.objects.filter(
                **({"pk": int(profile)} if str(profile).isdigit() else {"name": str(profile)})
            ).first()
            if profile is None:
                raise ValidationError({"profile": "No such profile."}, code="invalid")
        if profile.pk == user.capability_profile_id or (
            profile.is_default and user.capability_profile_id is None
        ):
            raise ValidationError({"profile": "That is your profile already."}, code="invalid")
        values["profile"] = profile
    elif kind != LimitKind.BOOST:
        raise ValidationError({"kind": f"Choose a kind: {', '.join(LimitKind.values)}."}, code="invalid")
    return values


def limit_request_create(
    *,
    user: User,
    kind: str,
    reason: str,
    until: date,
    gpu_hours_per_week: object = None,
    gpus_at_once: object = None,
    cpus_at_once: object = None,
    memory_gb_at_once: object = None,
    profile: CapabilityProfile | int | str | None = None,
    now: datetime | None = None,
) -> LimitRequest:
    """A student asks for more until a date, with a reason; maintainers answer in admin."""
    now = now or timezone.now()
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why you need it (a deadline, an experiment)."}, code="required")
    if len(reason) > MAX_REASON:
        raise ValidationError({"reason": f"Keep the reason under {MAX_REASON} characters."}, code="invalid")
    values = _asked_values(
        kind=kind,
        user=user,
        gpu_hours_per_week=gpu_hours_per_week,
        gpus_at_once=gpus_at_once,
        cpus_at_once=cpus_at_once,
        memory_gb_at_once=memory_gb_at_once,
        profile=profile,
    )
    ends_at = _check_until(until, now=now)
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).first()
        if LimitRequest.objects.filter(user=user, status=Status.PENDING).count() >= MAX_PENDING_PER_USER:
            raise ValidationError(
                f"You have {MAX_PENDING_PER_USER} requests waiting for an answer already.",
                code="too_many_pending",
            )
        return LimitRequest.objects.create(
            user=user, kind=kind, reason=reason, ends_at=ends_at, created_at=now, **values
        )


def _answered(request: LimitRequest, *, now: datetime) -> None:
    approved = request.status == Status.APPROVED
    until = f"{request.last_day:%Y-%m-%d}"
    title = (
        f"Your request for {request.summary()} was approved"
        if approved
        else f"Your request for {request.summary()} was denied"
    )
    body = f"It applies until the end of {until}." if approved else "Nothing changed."
    if request.note:
        body += f"\n\nThe maintainer's note: {request.note}"
    notify(
        notice=Notice(
            user_id=request.user_id,
            kind=NotificationKind.LIMIT_ANSWERED,
            key=f"{NotificationKind.LIMIT_ANSWERED}:limit-request-{request.pk}",
            title=title[:200],
            body=body,
            link=reverse("limit-requests"),
        ),
        now=now,
    )


def _lock_pending(request: LimitRequest) -> LimitRequest:
    locked = LimitRequest.objects.select_for_update(of=("self",)).select_related("profile").get(pk=request.pk)
    if locked.status != Status.PENDING:
        raise ValidationError(f"This request was {locked.status} already.", code="answered")
    return locked


@transaction.atomic
def limit_request_approve(
    *, request: LimitRequest, by: User, note: str = "", now: datetime | None = None
) -> LimitGrant:
    """Approves a pending request in one step: a grant from now to the asked end, and the
    student is told (with the note)."""
    now = now or timezone.now()
    request = _lock_pending(request)
    if request.ends_at <= now:
        raise ValidationError(
            "Its last day has passed; deny it, or ask the student to ask again.", code="until_past"
        )
    grant = LimitGrant.objects.create(
        user_id=request.user_id,
        request=request,
        kind=request.kind,
        gpu_hours_per_week=request.gpu_hours_per_week,
        gpus_at_once=request.gpus_at_once,
        cpus_at_once=request.cpus_at_once,
        memory_gb_at_once=request.memory_gb_at_once,
        profile=request.profile,
        starts_at=now,
        ends_at=request.ends_at,
        granted_by=by,
        created_at=now,
    )
    request.status, request.decided_at, request.decided_by = Status.APPROVED, now, by
    request.note = (note or request.note).strip()
    request.save(update_fields=["status", "decided_at", "decided_by", "note"])
    _answered(request, now=now)
    return grant


@transaction.atomic
def limit_request_deny(
    *, request: LimitRequest, by: User, note: str = "", now: datetime | None = None
) -> LimitRequest:
    """Denies a pending request in one step; the student is told, with the note."""
    now = now or timezone.now()
    request = _lock_pending(request)
    request.status, request.decided_at, request.decided_by = Status.DENIED, now, by
    request.note = (note or request.note).strip()
    request.save(update_fields=["status", "decided_at", "decided_by", "note"])
    _answered(request, now=now)
    return request


def limit_grant_end_now(*, grant: LimitGrant, now: datetime | None = None) -> LimitGrant:
    """A maintainer ends a grant early; the expiry task tells the student as for any end."""
    now = now or timezone.now()
    if grant.ends_at <= now:
        raise ValidationError("This grant has ended already.", code="ended")
    grant.ends_at = max(now, grant.starts_at + timedelta(microseconds=1))
    grant.save(update_fields=["ends_at"])
    return grant


def limit_grants_expire(*, now: datetime) -> int:
    """Marks the grants that have ended and tells each student once. Effective limits read
    only active grants, so a grant stops applying at its end whether or not this ran."""
    ended = 0
    for grant in LimitGrant.objects.filter(ended_at__isnull=True, ends_at__lte=now).select_related("profile"):
        with transaction.atomic():
            if not LimitGrant.objects.filter(pk=grant.pk, ended_at__isnull=True).update(ended_at=now):
                continue
            ended += 1
            notify(
                notice=Notice(
                    user_id=grant.user_id,
                    kind=NotificationKind.GRANT_EXPIRED,
                    key=f"{NotificationKind.GRANT_EXPIRED}:limit-grant-{grant.pk}",
                    title=f"Your granted {grant.summary()} has ended",
                    body="Your profile's limits apply again. You can ask for more on the requests page.",
                    link=reverse("limit-requests"),
                ),
                now=now,
            )
    return ended
