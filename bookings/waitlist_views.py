"""Pages of the waitlist: join from a refused booking, list my waiting requests, withdraw."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST, require_safe

from bookings.forms import WaitlistForm
from bookings.models import WaitlistEntry
from bookings.selectors import host_choice_labels, waitlist_entry_for_owner, waitlist_for_user
from bookings.waitlist_services import waitlist_join, waitlist_withdraw


def _owned_entry(request: HttpRequest, pk: int) -> WaitlistEntry:
    entry = waitlist_entry_for_owner(user_id=request.user.pk, pk=pk)
    if entry is None:
        raise Http404
    return entry


@login_required
@require_safe
def waitlist(request: HttpRequest) -> HttpResponse:
    entries = list(waitlist_for_user(user_id=request.user.pk)[:50])
    return render(request, "bookings/waitlist.html", {"entries": entries})


@login_required
@require_POST
def waitlist_join_view(request: HttpRequest) -> HttpResponse:
    """Posted from a booking the capacity refused, with its fields and how to wait. A refusal
    shows the booking form again with everything the user typed."""
    now = timezone.now()
    form = WaitlistForm(request.POST, user=request.user)
    if form.is_valid():
        data = form.cleaned_data
        try:
            waitlist_join(
                user=request.user,
                host=data["host"],
                start=data["start"],
                end=data["end"],
                cpus=data["cpus"],
                memory_gb=data["memory_gb"],
                gpu_count=data["gpu_count"],
                image=data["image"],
                extra_command=data["extra_command"],
                mode=data["mode"],
                latest_start=data["latest_start"],
                now=now,
            )
        except ValidationError as error:
            form.add_service_error(error)
        else:
            messages.success(
                request, _("You are on the waitlist; we book it and tell you as soon as a window fits.")
            )
            return redirect("waitlist")
    form.label_hosts(host_choice_labels(user=request.user, now=now, hosts=form.fields["host"].listed()))
    context = {"form": form, "waitlist_offer": True, "waitlist_form": form, "today": timezone.localdate(now)}
    return render(request, "bookings/reservation_form.html", context)


@login_required
@require_POST
def waitlist_withdraw_view(request: HttpRequest, pk: int) -> HttpResponse:
    entry = _owned_entry(request, pk)
    try:
        waitlist_withdraw(entry=entry, now=timezone.now())
    except ValidationError as error:
        for message in error.messages:
            messages.error(request, message)
    else:
        messages.success(request, _("The waiting request was withdrawn."))
    return redirect("waitlist")
