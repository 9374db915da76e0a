from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from bookings.models import Reservation
from bookings.services import STOPPED_BY_MAINTAINER, reservation_release
from containers.telemetry.models import GpuDuplicateUse, GpuSample, ReservationGpuStatus


@admin.register(GpuSample)
class GpuSampleAdmin(admin.ModelAdmin):
    list_display = ("taken_at", "gpu", "utilisation_percent", "memory_used_mb", "process_count")
    list_filter = ("gpu__host", "gpu")
    list_select_related = ("gpu__host",)
    date_hierarchy = "taken_at"
    search_fields = ("gpu__uuid", "gpu__host__name")

    # Samples are measurements: nobody edits them by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GpuSample | None = None) -> bool:
        return False


class IdleFilter(admin.SimpleListFilter):
    title = "idle"
    parameter_name = "idle"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Idle now"), ("no", "Not idle")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(idle_flagged_at__isnull=self.value() == "no")
        return queryset


@admin.register(ReservationGpuStatus)
class ReservationGpuStatusAdmin(admin.ModelAdmin):
    list_display = (
        "reservation",
        "user",
        "reservation_status",
        "is_idle",
        "idle_flagged_at",
        "auto_released_at",
        "checked_at",
    )
    list_filter = (IdleFilter, "reservation__host", "reservation__status")
    list_select_related = ("reservation__user", "reservation__host")
    search_fields = ("reservation__user__username",)
    raw_id_fields = ("reservation",)
    readonly_fields = ("checked_at", "idle_flagged_at", "auto_released_at")
    actions = ["release_reservations"]

    @admin.display(description="user", ordering="reservation__user__username")
    def user(self, status: ReservationGpuStatus) -> str:
        return status.reservation.user.username

    @admin.display(description="status")
    def reservation_status(self, status: ReservationGpuStatus) -> str:
        return status.reservation.get_status_display()

    @admin.display(boolean=True, description="idle")
    def is_idle(self, status: ReservationGpuStatus) -> bool:
        return status.is_idle

    @admin.action(description="Release the selected reservations now", permissions=["change"])
    def release_reservations(self, request: HttpRequest, queryset: QuerySet) -> None:
        now = timezone.now()
        released = 0
        for status in queryset.select_related("reservation"):
            try:
                reservation_release(
                    reservation=status.reservation,
                    now=now,
                    reason=STOPPED_BY_MAINTAINER,
                    ended_by=Reservation.EndedBy.MAINTAINER,
                )
            except ValidationError as error:
                self.message_user(
                    request, f"#{status.reservation_id}: {' '.join(error.messages)}", messages.WARNING
                )
            else:
                released += 1
        self.message_user(request, f"Released {released} reservation(s).")


@admin.register(GpuDuplicateUse)
class GpuDuplicateUseAdmin(admin.ModelAdmin):
    list_display = ("last_seen_at", "gpu", "pid", "container_id", "holder", "first_seen_at")
    list_filter = ("gpu__host", "gpu")
    list_select_related = ("gpu__host", "holder__user", "holder__host")
    search_fields = ("container_id", "pid", "holder__user__username")
    raw_id_fields = ("holder", "event")
    date_hierarchy = "last_seen_at"
