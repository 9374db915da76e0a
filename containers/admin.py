from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from aivc_portal.admin_actions import action_form_page
from bookings.maintenance import host_drain, host_set_accepting_bookings, reservations_to_drain
from bookings.services import reservation_release
from containers.models import (
    ContainerEvent,
    Gpu,
    GpuDuplicateUse,
    GpuSample,
    Host,
    Image,
    ImagePresence,
    ReservationGpuStatus,
    SpaceAudit,
)


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    fields = ("index", "name", "uuid", "memory_mb", "is_active")


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "cpus", "ram_gb", "swap_gb", "gpu_count", "accepting_bookings")
    list_filter = ("accepting_bookings",)
    search_fields = ("name", "address")
    inlines = [GpuInline]
    actions = ["lock", "unlock", "drain"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(gpus_in_service=Count("gpus", filter=Q(gpus__is_active=True)))
        )

    @admin.display(description="GPUs in service", ordering="gpus_in_service")
    def gpu_count(self, host: Host) -> int:
        return host.gpus_in_service

    @admin.action(description="Maintenance lock (stop accepting bookings)", permissions=["change"])
    def lock(self, request, queryset) -> None:
        for host in queryset:
            host_set_accepting_bookings(host=host, accepting=False)
        self.message_user(
            request, f"Locked {len(queryset)} host(s): new bookings are refused.", messages.SUCCESS
        )

    @admin.action(description="Lift the maintenance lock", permissions=["change"])
    def unlock(self, request, queryset) -> None:
        for host in queryset:
            host_set_accepting_bookings(host=host, accepting=True)
        self.message_user(request, f"{len(queryset)} host(s) accept bookings again.", messages.SUCCESS)

    @admin.action(
        description="Drain: lock, stop what runs, cancel what is scheduled…", permissions=["change"]
    )
    def drain(self, request, queryset):
        now = timezone.now()
        if "apply" not in request.POST:
            items = []
            for host in queryset:
                pending = list(reservations_to_drain(host=host, now=now))
                running = sum(1 for reservation in pending if reservation.start < now)
                items.append((host, f"{running} to stop now, {len(pending) - running} to cancel"))
            return action_form_page(
                self,
                request,
                action="drain",
                title="Drain hosts",
                items=items,
                submit_label="Yes, drain",
                intro="Each host stops accepting bookings; running reservations end now and "
                "scheduled ones are cancelled. Users keep their data.",
            )
        for host in queryset:
            result = host_drain(host=host, now=now)
            for error in result.errors:
                self.message_user(request, f"{host}: {error}", messages.ERROR)
            self.message_user(
                request,
                f"{host}: locked, {len(result.released)} stopped, {len(result.cancelled)} cancelled.",
                messages.SUCCESS,
            )
        return None


@admin.register(Gpu)
class GpuAdmin(admin.ModelAdmin):
    list_display = ("host", "index", "name", "uuid", "memory_mb", "is_active")
    list_filter = ("host", "is_active")
    list_select_related = ("host",)
    search_fields = ("uuid", "name", "host__name")


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("reference", "description", "cuda_version", "login", "is_default", "is_active")
    list_filter = ("is_active", "is_default", "login")
    search_fields = ("reference", "description")


@admin.register(ImagePresence)
class ImagePresenceAdmin(admin.ModelAdmin):
    """Written by the hosts' agents; maintainers read it to see which pulls failed."""

    list_display = ("image", "host", "state", "progress", "checked_at")
    list_filter = ("state", "host")
    list_select_related = ("image", "host")
    search_fields = ("image__reference", "message")
    readonly_fields = ("host", "image", "state", "progress", "message", "checked_at")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ContainerEvent)
class ContainerEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "level", "sign", "message", "user", "host", "reservation")
    list_filter = (
        "level",
        "sign",
        ("user", admin.RelatedOnlyFieldListFilter),
        ("host", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("user", "host", "reservation__user", "reservation__host")
    search_fields = ("message", "sign", "user__username")
    date_hierarchy = "created_at"
    raw_id_fields = ("user", "reservation")


@admin.register(SpaceAudit)
class SpaceAuditAdmin(admin.ModelAdmin):
    list_display = ("measured_at", "user", "host", "work_gb", "backup_gb", "complete", "over_quota")
    list_filter = ("over_quota", "complete", "host")
    list_select_related = ("user", "host")
    search_fields = ("user__username",)


# GPU telemetry ----------------------------------------------------------------------


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
                reservation_release(reservation=status.reservation, now=now)
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
