from django.contrib import admin

from bookings.models import GpuAllocation, Reservation


class GpuAllocationInline(admin.TabularInline):
    model = GpuAllocation
    extra = 0
    fields = ("gpu", "start", "end", "active")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "host", "start", "end", "cpus", "memory_gb", "gpus", "status")
    list_filter = ("status", "host")
    list_select_related = ("user", "host")
    search_fields = ("user__username", "container_id")
    date_hierarchy = "start"
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "updated_at")
    inlines = [GpuAllocationInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("allocations__gpu")

    @admin.display(description="GPUs")
    def gpus(self, reservation: Reservation) -> str:
        return ", ".join(str(index) for index in reservation.gpu_indices()) or "-"


@admin.register(GpuAllocation)
class GpuAllocationAdmin(admin.ModelAdmin):
    list_display = ("reservation", "gpu", "start", "end", "active")
    list_filter = ("active", "gpu__host")
    list_select_related = ("reservation__user", "gpu__host")
    search_fields = ("reservation__user__username",)
