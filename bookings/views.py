from datetime import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_safe

from accounts.selectors import capability_for
from bookings.capacity import availability, earliest_fit
from bookings.forms import END_AT, BookingForm, ExtendForm, WaitlistForm
from bookings.limits import usage_for
from bookings.models import Reservation
from bookings.selectors import (
    host_choice_labels,
    host_outlooks,
    hosts_open_to,
    recent_events_for_user,
    reservation_for_owner,
    reservations_by_time,
    space_audits_against_quota,
)
from bookings.services import (
    NOT_ENOUGH_CAPACITY,
    as_id,
    reservation_cancel,
    reservation_create,
    reservation_extend,
    reservation_release,
    reservation_request_restart,
)
from bookings.timeline import timeline as build_timeline
from bookings.timeslots import MAX_AHEAD, SLOT, needed_from, parse_time_input, slot_floor
from containers.inventory_selectors import host_health
from containers.lab import lab_url
from containers.models import ImagePresence
from containers.selectors import image_presence, image_presences_for
from containers.telemetry.selectors import gpu_table, idle_reservations_for_user, reservation_gpu_usage


def _owned_reservation(request: HttpRequest, pk: int) -> Reservation:
    """The signed-in user's reservation, or 404 for anyone else's (no hint that it exists)."""
    reservation = reservation_for_owner(user_id=request.user.pk, pk=pk)
    if reservation is None:
        raise Http404
    return reservation


def ssh_command(reservation: Reservation) -> str:
    return f"ssh -p {reservation.forward_port} root@{reservation.host.address or reservation.host.name}"


def _live_panels(reservations: list[Reservation]) -> list[dict]:
    """What `_live_status.html` shows for each reservation; it keeps polling while the
    status may still change on its own."""
    presences = image_presences_for(reservations=reservations)
    now = timezone.now()
    return [
        {
            "r": reservation,
            "ssh_command": ssh_command(reservation),
            "presence": presences.get(reservation.pk),
            "polling": reservation.is_live,
            "lab_url": lab_url(reservation, now=now),
        }
        for reservation in reservations
    ]


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    user = request.user
    by_time = reservations_by_time(user_id=user.pk, now=now)
    upcoming = list(by_time.upcoming)
    context = {
        "current": _live_panels(list(by_time.current)),
        "upcoming_notices": [panel for panel in _live_panels(upcoming) if panel["presence"]],
        "upcoming": upcoming,
        "past": by_time.past,
        "hosts": host_outlooks(user=user, now=now),
        "audits": space_audits_against_quota(user=user),
        "events": recent_events_for_user(user_id=user.pk),
        "gpu_table": gpu_table(now=now),
        "idle_reservations": list(idle_reservations_for_user(user_id=user.pk)),
        "limits_usage": usage_for(user=user, now=now),
    }
    return render(request, "bookings/dashboard.html", context)


def _window(form: BookingForm, *, now: datetime) -> tuple[datetime, datetime, datetime] | None:
    """The window a (partly) valid booking form asks for and when it first needs the server
    (a `now` booking: from this moment), or None while it is incomplete."""
    data = form.cleaned_data
    try:
        start, is_now = parse_time_input(data.get("start"), field="start", base=slot_floor(now), now=now)
        end, _is_now = parse_time_input(data.get("end"), field="end", base=start)
    except ValidationError:
        return None
    return (start, end, needed_from(start=start, is_now=is_now, now=now)) if end > start else None


def _suggestion(form: BookingForm, *, user, now: datetime) -> dict | None:
    """The earliest window of the requested length where the request fits, as a link that
    prefills the form with it."""
    data = form.cleaned_data
    window = _window(form, now=now)
    if window is None or data.get("host") is None:
        return None
    needed = [data.get(name) for name in ("cpus", "memory_gb", "gpu_count")]
    if any(value is None for value in needed):
        return None
    start, end, _needed_from = window
    this_slot = slot_floor(now)
    # Every host the user may book, the chosen one first (it wins a tie), none that is
    # locked for maintenance.
    chosen = [data["host"]] if data["host"].accepting_bookings else []
    others = hosts_open_to(user=user).filter(accepting_bookings=True).exclude(pk=data["host"].pk)
    found = earliest_fit(
        hosts=[*chosen, *others],
        cpus=needed[0],
        memory_gb=needed[1],
        gpu_count=needed[2],
        duration=end - start,
        not_before=max(start, this_slot),
        not_after=this_slot + MAX_AHEAD,
        user_id=user.pk,
    )
    if found is None:
        return {"start": None}
    found_start, found_end = timezone.localtime(found.start), timezone.localtime(found.end)
    query = {
        "host": found.host.pk,
        "end_kind": END_AT,
        "end_date": f"{found_end:%Y-%m-%d}",
        "end_time": f"{found_end:%H:%M}",
        "cpus": needed[0],
        "memory_gb": needed[1],
        "gpu_count": needed[2],
        "image": data["image"].pk if data.get("image") else "",
        "extra_command": data.get("extra_command", ""),
    }
    if found_start <= now:
        query["start_now"] = "on"
    else:
        query.update(start_date=f"{found_start:%Y-%m-%d}", start_time=f"{found_start:%H:%M}")
    return {
        "host": found.host,
        "start": found_start,
        "end": found_end,
        "url": f"{reverse('reservation-new')}?{urlencode(query)}",
    }


@login_required
@require_http_methods(["GET", "POST"])
def reservation_new(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    suggestion = None
    waitlist_offer = False  # a booking refused for capacity may wait instead
    if request.method == "POST":
        # The host labels (what each host has free now) are read below, only when the form
        # is shown again.
        form = BookingForm(request.POST, user=request.user)
        if form.is_valid():
            data = form.cleaned_data
            try:
                reservation = reservation_create(
                    user=request.user,
                    host=data["host"],
                    start=data["start"],
                    end=data["end"],
                    cpus=data["cpus"],
                    memory_gb=data["memory_gb"],
                    gpu_count=data["gpu_count"],
                    image=data["image"],
                    extra_command=data["extra_command"],
                    now=now,
                )
            except ValidationError as error:
                form.add_service_error(error)
                if NOT_ENOUGH_CAPACITY in error.messages:
                    suggestion = _suggestion(form, user=request.user, now=now)
                    waitlist_offer = True
            else:
                _tell_booked(request, reservation)
                return redirect("reservation-detail", pk=reservation.pk)
    else:
        prefill = {key: value for key, value in request.GET.items() if key in BookingForm.base_fields}
        form = BookingForm(initial=_initial(now) | prefill, user=request.user)
    # The hosts the form lists (read once), each labelled from one capacity read for all.
    form.label_hosts(host_choice_labels(user=request.user, now=now, hosts=form.fields["host"].listed()))
    context = {
        "form": form,
        "suggestion": suggestion,
        "waitlist_offer": waitlist_offer,
        "waitlist_form": WaitlistForm(user=request.user) if waitlist_offer else None,
        "today": timezone.localdate(now),
    }
    return render(request, "bookings/reservation_form.html", context)


def _tell_booked(request: HttpRequest, reservation: Reservation) -> None:
    """Says "successful" only when the host's agent last found the image in its engine (the
    service read the image through `with_known_presence`); otherwise the container waits
    for the host's check or pull, and the reservation page shows its state and reason."""
    image = reservation.image
    state = getattr(image, "presence_state", ImagePresence.State.PRESENT)
    if image is None or state == ImagePresence.State.PRESENT:
        messages.success(request, _("Booking successful!"))
        return
    messages.info(
        request,
        _(
            "Booked. %(host)s is checking that it holds the image %(image)s; the container starts "
            "once it does, and this page shows why if it cannot."
        )
        % {"host": reservation.host.name, "image": image.reference},
    )


def _initial(now: datetime) -> dict:
    """A first guess: the next slot, for one day."""
    start = timezone.localtime(slot_floor(now) + SLOT)
    return {"start_date": start.date(), "start_time": f"{start:%H:%M}"}


@login_required
@require_safe
def reservation_capacity(request: HttpRequest) -> HttpResponse:
    """The booking form's live panel: the user's maxima on the chosen host, what is free
    for the chosen window, and where the request would fit if it does not."""
    now = timezone.now()
    form = BookingForm(request.GET, user=request.user)
    form.is_valid()  # Fills cleaned_data with whatever parts are valid.
    data = form.cleaned_data
    context = {"host": data.get("host"), "window": None}
    if context["host"] is not None:
        context["capability"] = capability_for(user=request.user, host=context["host"])
        context["health"] = host_health(host=context["host"], now=now)
        if data.get("image") is not None:
            context["presence"] = image_presence(host=context["host"], image=data["image"])
        window = _window(form, now=now)
        if window is not None:
            start, end, held_from = window
            free = availability(host=context["host"], start=held_from, end=end)
            context.update(window=[timezone.localtime(start), timezone.localtime(end)], free=free)
            wanted = (data.get("cpus"), data.get("memory_gb"), data.get("gpu_count"))
            if None not in wanted and not free.fits(cpus=wanted[0], memory_gb=wanted[1], gpu_count=wanted[2]):
                context["suggestion"] = _suggestion(form, user=request.user, now=now)
    return render(request, "bookings/_capacity.html", context)


@login_required
@require_safe
def reservation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    reservation = _owned_reservation(request, pk)
    now = timezone.now()
    context = {
        "reservation": reservation,
        "live": _live_panels([reservation])[0],
        "events": reservation.events.select_related("host").order_by("-created_at", "-id")[:50],
        "can_cancel": reservation.can_cancel(now),
        "can_release": reservation.can_release(now),
        "can_extend": reservation.can_extend(now),
        "is_current": reservation.is_live and reservation.start <= now < reservation.end,
        "gpu_usage": reservation_gpu_usage(reservation=reservation) if reservation.gpu_count else None,
    }
    return render(request, "bookings/reservation_detail.html", context)


@login_required
@require_safe
def reservation_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The live status fragment the dashboard and the reservation page poll."""
    reservation = _owned_reservation(request, pk)
    return render(request, "bookings/_live_status.html", _live_panels([reservation])[0])


def _confirm_action(request: HttpRequest, pk: int, *, action: str, service, done: str) -> HttpResponse:
    """GET asks to confirm; POST (with CSRF) calls the service and goes back to the detail."""
    reservation = _owned_reservation(request, pk)
    if request.method == "POST":
        try:
            service(reservation=reservation, now=timezone.now())
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        else:
            messages.success(request, done)
        return redirect("reservation-detail", pk=reservation.pk)
    return render(
        request, "bookings/reservation_confirm.html", {"reservation": reservation, "action": action}
    )


@login_required
@require_http_methods(["GET", "POST"])
def reservation_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirm_action(
        request, pk, action="cancel", service=reservation_cancel, done=_("The reservation was cancelled.")
    )


@login_required
@require_http_methods(["GET", "POST"])
def reservation_release_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirm_action(
        request, pk, action="release", service=reservation_release, done=_("The reservation was released.")
    )


def _restart(*, reservation: Reservation, now: datetime) -> Reservation:
    return reservation_request_restart(reservation=reservation)


@login_required
@require_http_methods(["GET", "POST"])
def reservation_restart_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _confirm_action(
        request,
        pk,
        action="restart",
        service=_restart,
        done=_("Your container is being restarted; it is back in a few seconds."),
    )


@login_required
@require_http_methods(["GET", "POST"])
def reservation_extend_view(request: HttpRequest, pk: int) -> HttpResponse:
    reservation = _owned_reservation(request, pk)
    form = ExtendForm(request.POST or None, current_end=reservation.end)
    if request.method == "POST" and form.is_valid():
        try:
            reservation_extend(reservation=reservation, end=form.cleaned_data["end"], now=timezone.now())
        except ValidationError as error:
            for message in error.messages:
                form.add_error(None, message)
        else:
            messages.success(request, _("The reservation was extended."))
            return redirect("reservation-detail", pk=reservation.pk)
    return render(request, "bookings/reservation_extend.html", {"reservation": reservation, "form": form})


@login_required
@require_safe
def timeline(request: HttpRequest) -> HttpResponse:
    host_id = as_id(request.GET.get("host", ""))
    data = build_timeline(
        user_id=request.user.pk, now=timezone.now(), host_id=host_id, names_job_owners=request.user.is_staff
    )
    return render(request, "bookings/timeline.html", {"timeline": data, "host_id": host_id})
