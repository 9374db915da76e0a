from django.contrib import admin

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

    @admin.display(description="GPUs")
    def gpu_count(self, host: Host) -> int:
        return host.gpus.count()


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
    list_filter = ("level", "sign", "host")
    list_select_related = ("user", "host", "reservation")
    search_fields = ("message", "sign", "user__username")
    date_hierarchy = "created_at"
    raw_id_fields = ("user", "reservation")


@admin.register(SpaceAudit)
class SpaceAuditAdmin(admin.ModelAdmin):
    list_display = ("measured_at", "user", "host", "work_gb", "backup_gb", "complete", "over_quota")
    list_filter = ("over_quota", "complete", "host")
    list_select_related = ("user", "host")
    search_fields = ("user__username",)
