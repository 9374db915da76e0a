"""Booking rules. Each rule lives in one function below; the public services combine them
inside one transaction that locks the host row, with PostgreSQL's exclusion constraints
behind them."""

from datetime import datetime
from decimal import Decimal, DecimalException

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_noop, ngettext

from accounts.models import User
from accounts.selectors import capability_for
from accounts.services import forward_port_ensure, user_change_forward_port
from aivc_portal.scheduler import queue_host_task, queue_task
from aivc_portal.task_names import PREPARE_IMAGE_TASK, RECONCILE_TASK, SCHEDULE_JOBS_TASK, WAITLIST_TASK
from bookings.capacity import Availability, availability, gpus_free
from bookings.limits import check_usage
from bookings.models import GpuAllocation, Reservation
from bookings.selectors import forward_ports_held, host_open_to
from bookings.timeslots import MAX_AHEAD, MAX_LENGTH, needed_from, parse_time_input, slot_floor, wrong_input
from containers.commands import command_arguments
from containers.gpus import cuda_version_tuple
from containers.inventory_selectors import with_known_presence
from containers.models import Host, HostAgent, Image

# The seed's messages: services raise them in English (tests and the API rely on them);
# gettext_noop marks them for the catalogue, and forms show them translated.
NOT_ENOUGH_CAPACITY = gettext_noop("There is not enough computing power for the time you need, book again.")
OVER_MAXIMUM = gettext_noop("Over the maximum required.")
NOT_AVAILABLE_IMAGE = gettext_noop("Not the available image!")
KEYLESS_IMAGE = gettext_noop(
    "This image needs a password login, which the portal no longer passes; "
    "choose an image that takes SSH keys."
)
IMAGE_NOT_ON_HOST = gettext_noop(
    "The image %(image)s is not on %(host)s and could not be fetched (%(reason)s); "
    "choose another image, or ask a maintainer to build it there."
)
CUDA_TOO_NEW = gettext_noop(
    "The image %(image)s is built for CUDA %(needed)s, but the NVIDIA driver on %(host)s supports "
    "CUDA %(supported)s at most; choose an image built for CUDA %(supported)s or older, another "
    "host, or book without GPUs."
)
OWN_OVERLAP = gettext_noop("The time you are booking overlaps with your previous booking.")
MAX_EXTRA_COMMAND = 1000
# Requests are small numbers; anything this big is a typo, refused before arithmetic on it.
MAX_NUMBER = Decimal(1_000_000)


# Input shape -------------------------------------------------------------------------


def _decimal(value: object, *, field: str) -> Decimal:
    if isinstance(value, bool):
        raise wrong_input(f"{field} must be a number.", field)
    try:
        number = Decimal(str(value).strip())
    except (DecimalException, ValueError):
        raise wrong_input(f"{field} must be a number.", field) from None
    if not number.is_finite():
        raise wrong_input(f"{field} must be a finite number.", field)
    if number.copy_abs() >= MAX_NUMBER:
        raise wrong_input(f"{field} is far larger than any server.", field)
    return number


def _whole(value: object, *, field: str) -> int:
    number = _decimal(value, field=field)
    if number != number.to_integral_value():
        raise wrong_input(f"{field} must be a whole number.", field)
    return int(number)


def _resources(cpus: object, memory_gb: object, gpu_count: object) -> tuple[Decimal, int, int]:
    cpus = _decimal(cpus, field="cpus")
    if cpus != cpus.quantize(Decimal("0.01")):
        raise wrong_input("cpus takes at most two decimal places.", "cpus")
    return cpus, _whole(memory_gb, field="memory_gb"), _whole(gpu_count, field="gpu_count")


def as_id(text: str) -> int | None:
    """A database id typed as text (plain ASCII digits of sane length), else None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _host_id(host: object) -> int:
    """The id of a Host given as an instance, an id or a name; checks it exists."""
    if isinstance(host, Host):
        return host.pk
    text = str(host).strip() if host is not None else ""
    pk = as_id(text)
    lookup = {"pk": pk} if pk is not None else {"name": text}
    host_id = Host.objects.filter(**lookup).values_list("pk", flat=True).first() if text else None
    if host_id is None:
        raise ValidationError({"host": "Unknown host."}, code="unknown_host")
    return host_id


def _extra_command(value: str | None, *, user: User) -> str:
    command = (user.default_extra_command if value is None else str(value)).strip()
    if "\x00" in command:
        raise wrong_input("extra_command cannot contain a NUL character.", "extra_command")
    if len(command) > MAX_EXTRA_COMMAND:
        raise wrong_input(f"extra_command is longer than {MAX_EXTRA_COMMAND} characters.", "extra_command")
    try:
        command_arguments(command)
    except ValueError as error:
        raise wrong_input(f"extra_command cannot be read as arguments ({error}).", "extra_command") from None
    return command


# Rules -------------------------------------------------------------------------------


def _check_start(*, start: datetime, now: datetime, is_now: bool) -> None:
    """Rule 1, start: `now` is the current slot; otherwise after now, within 14 days."""
    if is_now:
        return
    if start <= now:
        raise wrong_input("The start time must not be in the past; use 'now' to start at once.", "start")
    if start - slot_floor(now) > MAX_AHEAD:
        raise wrong_input("The start time must be within 2 weeks from now.", "start")


def _check_end(*, start: datetime, end: datetime) -> None:
    """Rule 1, end: after the start, at most 14 days after it."""
    if end <= start:
        raise wrong_input("The end time must be after the start time.", "end")
    if end - start > MAX_LENGTH:
        raise wrong_input("The end time must be within 2 weeks from the start time.", "end")


def _check_within_capability(
    *, user: User, host: Host, cpus: Decimal, memory_gb: int, gpu_count: int
) -> None:
    """Rule 2: at least the minimum, at most the user's profile maximum and what the host
    has. An over-maximum refusal says which in words ("vm has 0 GPUs.")."""
    capability = capability_for(user=user, host=host)
    requests = (
        ("cpus", cpus, 1, capability.cpus),
        ("memory_gb", memory_gb, 1, capability.memory_gb),
        ("gpu_count", gpu_count, 0, capability.gpus),
    )
    errors = {}
    for field, value, minimum, maximum in requests:
        if value < minimum:
            errors[field] = f"The value can not lower than {minimum}. ({field}: {minimum} ~ {maximum:g})"
            continue
        refusal = _over_maximum(host=host, field=field, value=value, maximum=maximum)
        if refusal:
            errors[field] = refusal
    if errors:
        raise ValidationError(errors, code="over_maximum")


def _host_size(host: Host, field: str) -> Decimal | int:
    if field == "cpus":
        return Decimal(host.cpus)
    if field == "memory_gb":
        return host.memory_gb
    return len(host.active_gpus)


def _over_maximum(*, host: Host, field: str, value: Decimal | int, maximum: Decimal | int) -> str | None:
    """ "Over the maximum required." and what binds: the host's size or the user's maximum.
    The host's GPUs cost a query: read only for a request that has GPUs."""
    has = 0 if field == "gpu_count" and not value else _host_size(host, field)
    if value > has and has <= maximum:
        detail = _HOST_HAS[field](_plural(has)) % {"host": host.name, "count": f"{has:g}"}
    elif value > maximum:
        detail = _PROFILE_ALLOWS[field](_plural(maximum)) % {"count": f"{maximum:g}"}
    else:
        return None
    return f"{OVER_MAXIMUM} {detail}"


def _plural(count: Decimal | int) -> int:
    """gettext's plural forms take whole numbers; 2.5 CPUs read as many."""
    return 1 if count == 1 else 2


# What an over-maximum refusal names, in the words of the form (a count picks the plural).
_HOST_HAS = {
    "cpus": lambda n: ngettext("%(host)s has %(count)s CPU.", "%(host)s has %(count)s CPUs.", n),
    "memory_gb": lambda n: ngettext(
        "%(host)s has %(count)s GiB of memory.", "%(host)s has %(count)s GiB of memory.", n
    ),
    "gpu_count": lambda n: ngettext("%(host)s has %(count)s GPU.", "%(host)s has %(count)s GPUs.", n),
}
_PROFILE_ALLOWS = {
    "cpus": lambda n: ngettext(
        "Your profile allows at most %(count)s CPU.", "Your profile allows at most %(count)s CPUs.", n
    ),
    "memory_gb": lambda n: ngettext(
        "Your profile allows at most %(count)s GiB of memory.",
        "Your profile allows at most %(count)s GiB of memory.",
        n,
    ),
    "gpu_count": lambda n: ngettext(
        "Your profile allows at most %(count)s GPU.", "Your profile allows at most %(count)s GPUs.", n
    ),
}


def _check_no_own_overlap(*, free: Availability) -> None:
    """Rule 3: a user's live bookings never overlap, on any host; back-to-back is fine.
    `free` was read for the user (the capacity engine finds their clashing booking)."""
    clash = free.own_booking
    if clash is not None:
        clash_start, clash_end = timezone.localtime(clash.start), timezone.localtime(clash.end)
        window = f"{clash_start:%Y-%m-%d %H:%M} - {clash_end:%Y-%m-%d %H:%M}"
        raise ValidationError(f"{OWN_OVERLAP} ({clash.host_name}, {window})", code="own_overlap")


def _check_fits(*, free: Availability, cpus: Decimal, memory_gb: int, gpu_count: int) -> None:
    """Rule 4: the request fits what the capacity engine finds free for the whole window."""
    if not free.fits(cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count):
        raise ValidationError(NOT_ENOUGH_CAPACITY, code="no_capacity")


def _check_host_open_to(*, user: User, host: Host) -> None:
    """A host a maintainer restricted takes bookings only from the users it lists."""
    if not host_open_to(user=user, host=host):
        raise ValidationError(
            {"host": f"{host.name} is reserved for some users; choose another host."}, code="host_restricted"
        )


def _check_host_accepts(*, host: Host) -> None:
    """Rule 6: a host under maintenance lock takes no new bookings."""
    if not host.accepting_bookings:
        raise ValidationError(
            {"host": f"{host.name} is not accepting bookings right now (maintenance)."},
            code="host_locked",
        )


def _resolve_image(image: object, *, user: User, images: QuerySet[Image] | None = None) -> Image:
    """Rule 6: only active images; none given means the user's default, else the lab's.
    `images` narrows or annotates the images looked in (default: all)."""
    active = (Image.objects.all() if images is None else images).filter(is_active=True)
    if image is None:
        # One read for both: the user's own default wins over the lab's.
        wanted = Q(is_default=True) | Q(pk=user.default_image_id or 0)
        candidates = list(active.filter(wanted))
        chosen = next((i for i in candidates if i.pk == user.default_image_id), None)
        chosen = chosen or next(iter(candidates), None)
    elif isinstance(image, Image):
        chosen = active.filter(pk=image.pk).first()
    else:
        text = str(image).strip()
        pk = as_id(text)
        lookup = {"pk": pk} if pk is not None else {"reference": text}
        chosen = active.filter(**lookup).first()
    if chosen is None:
        raise ValidationError({"image": NOT_AVAILABLE_IMAGE}, code="image_unavailable")
    if not chosen.takes_portal_keys:
        # Its container would start, and nobody could ever log in to it.
        raise ValidationError({"image": KEYLESS_IMAGE}, code="image_needs_password")
    return chosen


def _check_image_on_host(*, image: Image, host: Host) -> None:
    """The host's agent found the image absent and unpullable within the last hour (see
    `with_known_presence`, which `image` was read through): its container could not start,
    so the booking is refused with the engine's reason. An older finding is not trusted:
    the booking is taken and queues a fresh check."""
    reason = getattr(image, "missing_reason", None)
    if reason is not None:
        message = IMAGE_NOT_ON_HOST % {
            "image": image.reference,
            "host": host.name,
            "reason": reason or "no reason given",
        }
        raise ValidationError({"image": message}, code="image_not_on_host")


def _check_cuda(*, image: Image, host: Host, gpu_count: int) -> None:
    """A GPU booking on an image built for a newer CUDA than the host's driver supports
    (from its agent's heartbeat) is refused, both versions named: CUDA programs in it would
    fail at their first GPU call, long after the start, and nothing the student can do
    inside the container fixes the host's driver. A refusal rather than a warning to accept
    for that reason. Not checked: bookings without GPUs (they never call the driver), an
    image without a CUDA version, a host whose agent reported no driver."""
    needed = cuda_version_tuple(image.cuda_version)
    if not gpu_count or needed is None:
        return
    supported_text = (
        HostAgent.objects.filter(host_id=host.pk).values_list("cuda_driver_version", flat=True).first() or ""
    )
    supported = cuda_version_tuple(supported_text)
    if supported is not None and needed > supported:
        message = CUDA_TOO_NEW % {
            "image": image.reference,
            "needed": ".".join(map(str, needed)),
            "host": host.name,
            "supported": ".".join(map(str, supported)),
        }
        raise ValidationError({"image": message}, code="cuda_too_new")


# Services ----------------------------------------------------------------------------


def _lock_host(host_id: int) -> Host:
    """Concurrent writes on one host's capacity queue here, always before any reservation
    row is locked. A user's own bookings on two hosts at once are kept apart by the
    database (constraint reservation_user_no_overlap); SQLite takes its one write lock at
    BEGIN IMMEDIATE instead. The host's access restriction, if any, comes with it (read, not
    locked), so the check that the host is open to the user usually needs no query."""
    try:
        return Host.objects.select_for_update(of=("self",)).select_related("access").get(pk=host_id)
    except Host.DoesNotExist:
        raise ValidationError({"host": "Unknown host."}, code="unknown_host") from None


def _refused_by_database(error: IntegrityError) -> ValidationError:
    """The exclusion constraints caught a race the checks above could not see."""
    if "reservation_user_no_overlap" in str(error):
        return ValidationError(OWN_OVERLAP, code="own_overlap")
    return ValidationError(NOT_ENOUGH_CAPACITY, code="no_capacity")


def reservation_create(
    *,
    user: User,
    host: Host | int | str,
    start: datetime | str,
    end: datetime | str,
    cpus: object,
    memory_gb: object,
    gpu_count: object = 0,
    image: Image | int | str | None = None,
    extra_command: str | None = None,
    now: datetime | None = None,
) -> Reservation:
    now = now or timezone.now()
    host_id = _host_id(host)
    cpus, memory_gb, gpu_count = _resources(cpus, memory_gb, gpu_count)
    start, is_now = parse_time_input(start, field="start", base=slot_floor(now), now=now)
    end, _ = parse_time_input(end, field="end", base=start)
    _check_start(start=start, now=now, is_now=is_now)
    _check_end(start=start, end=end)
    try:
        with transaction.atomic():
            host = _lock_host(host_id)
            _check_host_accepts(host=host)
            _check_host_open_to(user=user, host=host)
            _check_within_capability(
                user=user, host=host, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count
            )
            image = _resolve_image(
                image, user=user, images=with_known_presence(Image.objects.all(), host_id=host.pk, now=now)
            )
            _check_image_on_host(image=image, host=host)
            _check_cuda(image=image, host=host, gpu_count=gpu_count)
            command = _extra_command(extra_command, user=user)
            held_from = needed_from(start=start, is_now=is_now, now=now)
            check_usage(
                user=user,
                start=held_from,
                end=end,
                cpus=cpus,
                memory_gb=memory_gb,
                gpu_count=gpu_count,
                now=now,
            )
            free = availability(host=host, start=held_from, end=end, booking_user_id=user.pk)
            _check_no_own_overlap(free=free)
            _check_fits(free=free, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count)
            gpus = free.pick_gpus(gpu_count)
            reservation = Reservation.objects.create(
                user=user,
                host=host,
                start=start,
                end=end,
                booked_end=end,
                cpus=cpus,
                memory_gb=memory_gb,
                gpu_count=gpu_count,
                image=image,
                extra_command=command,
                # Assigned at the first booking that needs one, from the free ports.
                forward_port=forward_port_ensure(user=user).forward_port,
                # A booking for now is charged from this moment, when it first needs the
                # server, not from the slot's start before it was made (docs/reports.md).
                charged_from=held_from if held_from > start else None,
            )
            GpuAllocation.objects.bulk_create(
                GpuAllocation(reservation=reservation, gpu=gpu, start=held_from, end=end) for gpu in gpus
            )
    except IntegrityError as error:
        raise _refused_by_database(error) from None
    if not image.known_present:
        queue_host_task(PREPARE_IMAGE_TASK, host=reservation.host, reservation_id=reservation.pk)
    if start <= now:
        queue_host_task(RECONCILE_TASK, host=reservation.host)
    return reservation


def _lock_reservation(reservation: Reservation) -> Reservation:
    """The one lock order for every write that touches capacity: the host row, then the
    reservation row, nothing else. The joined host and user are read, not locked (`of`):
    locking them in whatever order PostgreSQL meets them deadlocked against bookings,
    which hold the host and take a key-share lock on the user when they insert."""
    host = _lock_host(reservation.host_id)
    locked = Reservation.objects.select_for_update(of=("self",)).select_related("user").get(pk=reservation.pk)
    locked.host = host
    return locked


# What the owner is told when someone else stops or cancels their reservation.
STOPPED_BY_MAINTAINER = "A maintainer stopped it."
CANCELLED_BY_MAINTAINER = "A maintainer cancelled it."


@transaction.atomic
def reservation_cancel(
    *,
    reservation: Reservation,
    now: datetime | None = None,
    reason: str = "",
    ended_by: str = Reservation.EndedBy.OWNER,
) -> Reservation:
    """Cancels a reservation whose container was never launched; its capacity is freed.
    `reason`, when someone other than its owner cancels it, is what the owner is told;
    `ended_by` who it was, for the reports."""
    now = now or timezone.now()
    reservation = _lock_reservation(reservation)
    if not reservation.can_cancel(now):
        raise ValidationError(
            "Only a reservation that has not started can be cancelled; release a started one instead.",
            code="not_cancellable",
        )
    reservation.status = Reservation.Status.CANCELLED
    reservation.cancelled_at = now
    reservation.status_message = reason[:500]
    reservation.ended_by = ended_by
    reservation.save(update_fields=["status", "cancelled_at", "status_message", "ended_by", "updated_at"])
    reservation.allocations.update(active=False)
    queue_host_task(RECONCILE_TASK, host=reservation.host)
    queue_task(SCHEDULE_JOBS_TASK)
    # What it gave back may be what a waiting booking request waits for.
    queue_task(WAITLIST_TASK)
    return reservation


@transaction.atomic
def reservation_release(
    *,
    reservation: Reservation,
    now: datetime | None = None,
    reason: str = "",
    ended_by: str = Reservation.EndedBy.OWNER,
) -> Reservation:
    """Ends a started reservation now: its CPUs, memory and GPUs are free from this moment,
    and the scheduler removes its container (it no longer belongs to a live reservation).
    `reason`, when someone other than its owner stops it, is what the owner is told;
    `ended_by` who it was, for the reports."""
    now = now or timezone.now()
    reservation = _lock_reservation(reservation)
    if reservation.is_live and reservation.start >= now:
        raise ValidationError("This reservation has not started yet; cancel it instead.", code="not_started")
    if not reservation.can_release(now):
        raise ValidationError("Only a running reservation can be released.", code="not_releasable")
    reservation.end = now
    reservation.released_at = reservation.ended_at = now
    reservation.status = Reservation.Status.ENDED
    reservation.status_message = reason[:500]
    reservation.ended_by = ended_by
    fields = ["end", "released_at", "status", "ended_at", "status_message", "ended_by", "updated_at"]
    reservation.save(update_fields=fields)
    reservation.allocations.filter(start__gte=now).update(active=False)
    reservation.allocations.filter(start__lt=now, end__gt=now).update(end=now)
    queue_host_task(RECONCILE_TASK, host=reservation.host)
    queue_task(SCHEDULE_JOBS_TASK)
    # What it gave back may be what a waiting booking request waits for.
    queue_task(WAITLIST_TASK)
    return reservation


def _check_added_window(*, reservation: Reservation, host: Host, start: datetime, end: datetime) -> None:
    """Time added to an existing reservation, before or after it, passes rules 3 and 4 with
    the same CPUs, memory and GPUs it already holds."""
    is_booking = reservation.kind == Reservation.Kind.BOOKING
    free = availability(
        host=host,
        start=start,
        end=end,
        exclude_reservation_id=reservation.pk,
        booking_user_id=reservation.user_id if is_booking else None,
    )
    _check_no_own_overlap(free=free)
    _check_fits(free=free, cpus=reservation.cpus, memory_gb=reservation.memory_gb, gpu_count=0)
    gpu_ids = list(reservation.allocations.filter(active=True).values_list("gpu_id", flat=True))
    if gpu_ids and not gpus_free(
        gpu_ids=gpu_ids, start=start, end=end, exclude_reservation_id=reservation.pk
    ):
        raise ValidationError(NOT_ENOUGH_CAPACITY, code="no_capacity")


def _check_usage_of(reservation: Reservation, *, start: datetime, end: datetime, now: datetime) -> None:
    """The usage limits on time added to a reservation, [start, end), next to itself."""
    check_usage(
        user=reservation.user,
        start=start,
        end=end,
        cpus=reservation.cpus,
        memory_gb=reservation.memory_gb,
        gpu_count=reservation.gpu_count,
        now=now,
    )


def reservation_extend(
    *, reservation: Reservation, end: datetime | str, now: datetime | None = None
) -> Reservation:
    """Moves the end later, keeping the same GPUs; the added time passes the same rules as
    a new booking."""
    now = now or timezone.now()
    try:
        with transaction.atomic():
            reservation = _lock_reservation(reservation)
            host = reservation.host
            user = reservation.user
            if reservation.kind != Reservation.Kind.BOOKING:
                # The job's time limit, which its profile bounds, is the job's length.
                raise ValidationError(
                    "A batch job's time is its time limit; it cannot be extended.", code="job_not_extendable"
                )
            if not reservation.can_extend(now):
                raise ValidationError(
                    "Only a scheduled or running reservation can be extended.", code="not_extendable"
                )
            new_end, _ = parse_time_input(end, field="end", base=reservation.start)
            if new_end <= reservation.end:
                raise wrong_input("The new end time must be after the current end time.", "end")
            _check_end(start=reservation.start, end=new_end)
            _check_host_accepts(host=host)
            _check_host_open_to(user=user, host=host)
            _check_within_capability(
                user=user,
                host=host,
                cpus=reservation.cpus,
                memory_gb=reservation.memory_gb,
                gpu_count=reservation.gpu_count,
            )
            _resolve_image(reservation.image, user=user)
            _check_usage_of(reservation, start=reservation.end, end=new_end, now=now)
            _check_added_window(reservation=reservation, host=host, start=reservation.end, end=new_end)
            reservation.end = reservation.booked_end = new_end
            reservation.save(update_fields=["end", "booked_end", "updated_at"])
            reservation.allocations.filter(active=True).update(end=new_end)
    except IntegrityError as error:
        raise _refused_by_database(error) from None
    return reservation


# Maintainers' operations (admin actions) ---------------------------------------------


def reservation_start_now(*, reservation: Reservation, now: datetime | None = None) -> Reservation:
    """Moves a scheduled reservation's start back to the current slot, keeping its GPUs, when
    the added time [current slot, old start) passes the same rules as a new booking."""
    now = now or timezone.now()
    new_start = slot_floor(now)
    try:
        with transaction.atomic():
            reservation = _lock_reservation(reservation)
            host = reservation.host
            if reservation.status != Reservation.Status.SCHEDULED:
                raise ValidationError(
                    "Only a scheduled reservation can be started now.", code="not_scheduled"
                )
            if reservation.start <= now:
                raise ValidationError(
                    "This reservation's start has passed; the scheduler launches it.", code="already_started"
                )
            _check_end(start=new_start, end=reservation.end)
            _check_usage_of(reservation, start=now, end=reservation.start, now=now)
            _check_added_window(reservation=reservation, host=host, start=now, end=reservation.start)
            reservation.start = new_start
            reservation.save(update_fields=["start", "updated_at"])
            reservation.allocations.filter(active=True).update(start=now)
    except IntegrityError as error:
        raise _refused_by_database(error) from None
    queue_host_task(RECONCILE_TASK, host=reservation.host)
    return reservation


@transaction.atomic
def reservation_request_restart(*, reservation: Reservation) -> Reservation:
    """Asks the scheduler to recreate a running reservation's container (the old `-rst`)."""
    reservation = _lock_reservation(reservation)
    if reservation.status not in (Reservation.Status.STARTING, Reservation.Status.RUNNING):
        raise ValidationError("Only a running reservation's container can be restarted.", code="not_running")
    reservation.restart_requested = True
    reservation.save(update_fields=["restart_requested", "updated_at"])
    queue_host_task(RECONCILE_TASK, host=reservation.host)
    return reservation


# Account settings that bookings depend on ------------------------------------------------


@transaction.atomic
def forward_port_change(*, user: User, port: int, now: datetime | None = None) -> User:
    """Moves a user's SSH forward port. Their reservations not yet launched follow it; a
    running container is bound to the old port, so the change waits until it is released.
    Ports that other users' live reservations still use stay taken."""
    now = now or timezone.now()
    live = Reservation.objects.live().filter(user=user, end__gt=now).select_for_update()
    if live.filter(status__in=(Reservation.Status.STARTING, Reservation.Status.RUNNING)).exists():
        raise ValidationError(
            {
                "forward_port": "Your container is running on your current port; "
                "release it before you change the port."
            },
            code="port_in_use",
        )
    held = forward_ports_held(now=now, exclude_user_id=user.pk)
    user = user_change_forward_port(user=user, port=port, ports_held=held)
    live.update(forward_port=user.forward_port)
    return user


# Rules batch jobs apply too ----------------------------------------------------------------
# jobs.services takes a job's resources, quota, image and host the way a booking does; these
# public names keep one definition of each rule.
request_resources = _resources
whole_number = _whole
host_id_for = _host_id
check_within_capability = _check_within_capability
check_host_accepts = _check_host_accepts
check_host_open_to = _check_host_open_to
resolve_image = _resolve_image
# bookings.import_services writes another system's reservations under the same lock and
# the same consistency rules.
lock_host = _lock_host
check_no_own_overlap = _check_no_own_overlap
refused_by_database = _refused_by_database
# bookings.waitlist_services reads a waiting request's window and command as a booking does.
check_start = _check_start
check_end = _check_end
extra_command_for = _extra_command


def hosts_within_maxima(hosts: list[Host], *, user: User, cpus, memory_gb: int, gpu_count: int) -> list[Host]:
    """Those of `hosts` where the request is within the user's maxima; when none is, the
    first host's refusal, as booking there would answer. Used where a request may go to
    any host: the waitlist and the API's earliest fit."""
    allowed, refusal = [], None
    for host in hosts:
        try:
            _check_within_capability(
                user=user, host=host, cpus=cpus, memory_gb=memory_gb, gpu_count=gpu_count
            )
        except ValidationError as error:
            refusal = refusal or error
        else:
            allowed.append(host)
    if refusal is not None and not allowed:
        raise refusal
    return allowed
