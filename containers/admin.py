from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from aivc_portal.admin_actions import action_form_page
from bookings.maintenance import host_drain, host_set_accepting_bookings, reservations_to_drain
from containers.models import ContainerEvent, Gpu, Host, Image, SpaceAudit


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
    list_display = ("reference", "description", "cuda_version", "is_default", "is_active")
    list_filter = ("is_active", "is_default")
    search_fields = ("reference", "description")


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
