from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from aivc_portal.admin_actions import action_form_page, apply_to_each, tell_owner
from bookings.models import GpuAllocation, Reservation, WaitlistEntry
from bookings.services import (
    CANCELLED_BY_MAINTAINER,
    STOPPED_BY_MAINTAINER,
    reservation_cancel,
    reservation_extend,
    reservation_release,
    reservation_request_restart,
    reservation_start_now,
)
from bookings.waitlist_services import waitlist_withdraw

MAINTAINER = Reservation.EndedBy.MAINTAINER


class GpuAllocationInline(admin.TabularInline):
    model = GpuAllocation
    extra = 0
    fields = ("gpu", "start", "end", "active")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class ExtendForm(forms.Form):
    end = forms.CharField(
        label="New end",
        max_length=40,
        help_text="'YYYY MM DD hh mm' (mm 00 or 30), or 'N-day' / 'N-week' counted from the start.",
    )


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "host", "kind", "start", "end", "cpus", "memory_gb", "gpus", "status")
    list_filter = ("status", "kind", "host")
    list_select_related = ("user", "host")
    search_fields = ("user__username", "container_id")
    date_hierarchy = "start"
    # The window, resources and status change only through the actions, which run the
    # booking rules and keep the GPU allocations in step; new bookings go through the site.
    readonly_fields = (
        "user",
        "host",
        "start",
        "end",
        "booked_end",
        "cpus",
        "memory_gb",
        "gpu_count",
        "image",
        "extra_command",
        "forward_port",
        "status",
        "status_message",
        "container_id",
        "container_address",
        "started_at",
        "ended_at",
        "cancelled_at",
        "released_at",
        "restart_count",
        "restart_requested",
        "created_at",
        "updated_at",
    )
    inlines = [GpuAllocationInline]
    actions = ["start_now", "stop_now", "restart", "extend", "cancel"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("allocations__gpu")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="GPUs")
    def gpus(self, reservation: Reservation) -> str:
        return ", ".join(str(index) for index in reservation.gpu_indices()) or "-"

    def _changed(
        self, request: HttpRequest, reservation: Reservation, action: str, *, takes_time: bool = False
    ) -> None:
        tell_owner(
            request,
            reservation=reservation,
            user=reservation.user,
            subject=f"Reservation #{reservation.pk}",
            action=action,
            takes_time=takes_time,
        )

    @admin.action(description="Start now (move the start to the current slot)", permissions=["change"])
    def start_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        def start_now(reservation: Reservation) -> None:
            reservation = reservation_start_now(reservation=reservation)
            self._changed(request, reservation, "was moved to start now")

        apply_to_each(self, request, queryset, start_now, "Moved to start now", audit="Started now.")

    @admin.action(description="Stop now (release the rest of the window)", permissions=["change"])
    def stop_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        def stop(reservation: Reservation) -> None:
            reservation = reservation_release(
                reservation=reservation, reason=STOPPED_BY_MAINTAINER, ended_by=MAINTAINER
            )
            self._changed(request, reservation, "was stopped", takes_time=True)

        apply_to_each(self, request, queryset, stop, "Stopped", audit="Stopped now (released).")

    @admin.action(description="Restart the container", permissions=["change"])
    def restart(self, request: HttpRequest, queryset: QuerySet) -> None:
        def restart(reservation: Reservation) -> None:
            reservation = reservation_request_restart(reservation=reservation)
            self._changed(request, reservation, "had its container restarted")

        apply_to_each(
            self, request, queryset, restart, "Restart queued", audit="Container restart requested."
        )

    @admin.action(description="Cancel (not started yet)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        def cancel(reservation: Reservation) -> None:
            reservation = reservation_cancel(
                reservation=reservation, reason=CANCELLED_BY_MAINTAINER, ended_by=MAINTAINER
            )
            self._changed(request, reservation, "was cancelled", takes_time=True)

        apply_to_each(self, request, queryset, cancel, "Cancelled", audit="Cancelled.")

    @admin.action(description="Extend to a new end…", permissions=["change"])
    def extend(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        form = ExtendForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            end = form.cleaned_data["end"]

            def extend(reservation: Reservation) -> None:
                reservation = reservation_extend(reservation=reservation, end=end)
                ends = timezone.localtime(reservation.end)
                self._changed(request, reservation, f"was extended to {ends:%Y-%m-%d %H:%M}")

            apply_to_each(self, request, queryset, extend, "Extended", audit=f"Extended (new end: {end}).")
            return None
        return action_form_page(
            self,
            request,
            action="extend",
            title="Extend reservations",
            items=[(reservation, "") for reservation in queryset],
            submit_label="Extend",
            form=form,
        )


@admin.register(GpuAllocation)
class GpuAllocationAdmin(admin.ModelAdmin):
    list_display = ("reservation", "gpu", "start", "end", "active")
    list_filter = ("active", "gpu__host")
    list_select_related = ("reservation__user", "reservation__host", "gpu__host")
    search_fields = ("reservation__user__username",)

    def has_add_permission(self, request) -> bool:
        return False  # GPUs are allocated by the booking rules, never by hand


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(admin.ModelAdmin):
    """Bookings waiting for capacity. They hold nothing; the waitlist tick books them
    through the booking rules. Maintainers see who waits for what, and may withdraw one."""

    list_display = (
        "id",
        "user",
        "host",
        "mode",
        "earliest_start",
        "latest_start",
        "duration_minutes",
        "gpu_count",
        "status",
        "reservation",
    )
    list_filter = ("status", "mode", "host")
    search_fields = ("user__username",)
    list_select_related = ("user", "host", "reservation")
    readonly_fields = [field.name for field in WaitlistEntry._meta.fields]
    actions = ("withdraw",)

    def has_add_permission(self, request) -> bool:
        return False  # a request waits from the booking form, the API or aivc

    @admin.action(description="Withdraw the selected waiting requests", permissions=["change"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet) -> None:
        apply_to_each(self, request, queryset, lambda entry: waitlist_withdraw(entry=entry), "Withdrawn")
