from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from aivc_portal.admin_actions import action_form_page, log_each, tell_owner
from bookings.capacity import availability
from bookings.maintenance import (
    DrainResult,
    host_drain,
    host_set_accepting_bookings,
    reservations_to_drain,
)
from bookings.models import HostAccess
from bookings.timeslots import MAX_AHEAD, MAX_LENGTH
from containers.inventory_selectors import host_health
from containers.inventory_services import image_set_default
from containers.models import ContainerEvent, Gpu, Host, HostAgent, Image, ImagePresence, SpaceAudit


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    fields = ("index", "name", "uuid", "memory_mb", "is_active")


class HostAccessInline(admin.StackedInline):
    model = HostAccess
    extra = 0
    max_num = 1
    can_delete = True
    filter_horizontal = ("users", "profiles")
    verbose_name = "who may book this host"
    verbose_name_plural = "who may book this host (nobody listed: everyone)"


class HostAgentInline(admin.StackedInline):
    """What the host's agent last reported; written by the agent, read here."""

    model = HostAgent
    extra = 0
    max_num = 0
    can_delete = False
    fields = readonly_fields = (
        "holder",
        "started_at",
        "last_seen_at",
        "lease_expires_at",
        "version",
        "engine_version",
        "nvml_driver",
        "cuda_driver_version",
        "disk_free_gb",
        "silent_since",
    )


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    # Short headers: the agent's columns stay on a 1280 px screen.
    list_display = (
        "name",
        "address",
        "cpus",
        "ram",
        "swap",
        "gpu_count",
        "open",
        "agent_health",
        "agent_last_seen",
    )
    list_filter = ("accepting_bookings", "served_by_agent")
    list_select_related = ("agent",)
    search_fields = ("name", "address")
    inlines = [GpuInline, HostAgentInline, HostAccessInline]
    actions = ["lock", "unlock", "drain"]
    fieldsets = (
        (None, {"fields": ("name", "address", "accepting_bookings", "served_by_agent")}),
        (
            "What it lends",
            {
                "fields": (
                    "cpus",
                    "ram_gb",
                    "swap_gb",
                    "max_work_space_gb",
                    "max_backup_space_gb",
                    "max_home_space_gb",
                )
            },
        ),
        (
            "Folders on this server",
            {
                "description": "Paths on this server's own disks (or its NFS mounts), where its agent "
                "makes each user's work and backup folder and the portal's state folder. A user's "
                "files are per server unless these roots are the same shared storage on every "
                "server (see docs/operations.md).",
                "fields": ("work_root", "backup_root", "dataset_root"),
            },
        ),
        ("Engine", {"fields": ("docker_url",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(gpus_in_service=Count("gpus", filter=Q(gpus__is_active=True)))
        )

    @admin.display(description="agent")
    def agent_health(self, host: Host) -> str:
        return host_health(host=host, now=timezone.now()).label

    @admin.display(description="seen", ordering="agent__last_seen_at")
    def agent_last_seen(self, host: Host) -> str:
        agent = getattr(host, "agent", None) if host.served_by_agent else None
        if agent is None or agent.last_seen_at is None:
            return "-"
        return f"{timezone.localtime(agent.last_seen_at):%m-%d %H:%M}"

    @admin.display(description="RAM GiB", ordering="ram_gb")
    def ram(self, host: Host) -> int:
        return host.ram_gb

    @admin.display(description="swap", ordering="swap_gb")
    def swap(self, host: Host) -> int:
        return host.swap_gb

    @admin.display(description="open", boolean=True, ordering="accepting_bookings")
    def open(self, host: Host) -> bool:
        return host.accepting_bookings

    def save_model(self, request: HttpRequest, obj: Host, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change:
            self._warn_if_overbooked(request, obj)

    def _warn_if_overbooked(self, request: HttpRequest, host: Host) -> None:
        """Shrinking a host below what is booked is allowed (hardware fails), but said."""
        now = timezone.now()
        peak = availability(host=host, start=now, end=now + MAX_AHEAD + MAX_LENGTH).peak
        if peak.cpus > host.cpus or peak.memory_gb > host.memory_gb:
            self.message_user(
                request,
                f"{host.name} now has less than is booked: up to {peak.cpus.normalize():f} CPUs and "
                f"{peak.memory_gb} GiB memory are booked at once, the host lends {host.cpus} CPUs and "
                f"{host.memory_gb} GiB. Existing reservations keep their place; release or move some "
                "(the timeline shows where it is overbooked).",
                messages.WARNING,
            )

    @admin.display(description="GPUs", ordering="gpus_in_service")
    def gpu_count(self, host: Host) -> int:
        return host.gpus_in_service

    @admin.action(description="Maintenance lock (stop accepting bookings)", permissions=["change"])
    def lock(self, request, queryset) -> None:
        for host in queryset:
            host_set_accepting_bookings(host=host, accepting=False)
        log_each(self, request, queryset, "Maintenance lock on (no new bookings).")
        self.message_user(
            request, f"Locked {len(queryset)} host(s): new bookings are refused.", messages.SUCCESS
        )

    @admin.action(description="Lift the maintenance lock", permissions=["change"])
    def unlock(self, request, queryset) -> None:
        for host in queryset:
            host_set_accepting_bookings(host=host, accepting=True)
        log_each(self, request, queryset, "Maintenance lock lifted.")
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
            self._record_drain(request, host, result)
            for error in result.errors:
                self.message_user(request, f"{host}: {error}", messages.ERROR)
            self.message_user(
                request,
                f"{host}: locked, {len(result.released)} stopped, {len(result.cancelled)} cancelled.",
                messages.SUCCESS,
            )
        return None

    def _record_drain(self, request: HttpRequest, host: Host, result: DrainResult) -> None:
        self.log_change(
            request,
            host,
            f"Drained: locked, {len(result.released)} stopped, {len(result.cancelled)} cancelled.",
        )
        for reservations, action, audit in (
            (result.released, f"was stopped (draining {host.name})", "Stopped (host drained)."),
            (result.cancelled, f"was cancelled (draining {host.name})", "Cancelled (host drained)."),
        ):
            for reservation in reservations:
                self.log_change(request, reservation, audit)
                tell_owner(
                    request,
                    reservation=reservation,
                    user=reservation.user,
                    subject=f"Reservation #{reservation.pk}",
                    action=action,
                    takes_time=True,
                )


@admin.register(Gpu)
class GpuAdmin(admin.ModelAdmin):
    list_display = ("host", "index", "name", "uuid", "memory_mb", "is_active")
    list_filter = ("host", "is_active")
    list_select_related = ("host",)
    search_fields = ("uuid", "name", "host__name")


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = (
        "reference",
        "description",
        "cuda_version",
        "login",
        "lab_modes",
        "is_default",
        "is_active",
    )
    list_filter = ("is_active", "is_default", "login", "lab_modes")
    search_fields = ("reference", "description")
    actions = ["make_default"]

    @admin.action(description="Make the default image", permissions=["change"])
    def make_default(self, request: HttpRequest, queryset: QuerySet) -> None:
        """The same service the importer uses: the previous default steps down."""
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one image to be the default.", messages.ERROR)
            return
        image = queryset.get()
        try:
            previous = image_set_default(image=image)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return
        replaced = f" instead of {previous.reference}" if previous else ""
        self.log_change(request, image, f"Made the default image{replaced}.")
        self.message_user(request, f"{image.reference} is now the default image{replaced}.", messages.SUCCESS)


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
    # Trimmed so the user, host and reservation stay on a 1280 px screen; the change page
    # has the whole line.
    list_display = ("when", "level", "sign", "short_message", "user", "host", "reservation_number")
    list_display_links = ("when",)
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

    MESSAGE_CHARACTERS = 160

    @admin.display(description="at", ordering="created_at")
    def when(self, event: ContainerEvent) -> str:
        return f"{timezone.localtime(event.created_at):%m-%d %H:%M}"

    @admin.display(description="message", ordering="message")
    def short_message(self, event: ContainerEvent) -> str:
        if len(event.message) <= self.MESSAGE_CHARACTERS:
            return event.message
        return format_html(
            '<span title="{}">{}…</span>', event.message, event.message[: self.MESSAGE_CHARACTERS]
        )

    @admin.display(description="resv.", ordering="reservation")
    def reservation_number(self, event: ContainerEvent) -> str:
        return f"#{event.reservation_id}" if event.reservation_id else "-"

    def has_add_permission(self, request) -> bool:
        return False  # the monitor log is written by the portal, never by hand


@admin.register(SpaceAudit)
class SpaceAuditAdmin(admin.ModelAdmin):
    list_display = (
        "measured_at",
        "user",
        "host",
        "work_gb",
        "backup_gb",
        "home_gb",
        "complete",
        "over_quota",
    )
    list_filter = ("over_quota", "complete", "host")
    list_select_related = ("user", "host")
    search_fields = ("user__username",)


@admin.register(HostAgent)
class HostAgentAdmin(admin.ModelAdmin):
    list_display = (
        "host",
        "health",
        "last_seen_at",
        "holder",
        "version",
        "engine_version",
        "nvml_driver",
        "cuda_driver_version",
    )
    list_filter = ("host__served_by_agent",)
    list_select_related = ("host",)
    search_fields = ("host__name", "holder")
    readonly_fields = HostAgentInline.fields

    @admin.display(description="health")
    def health(self, agent: HostAgent) -> str:
        return host_health(host=agent.host, now=timezone.now()).label

    # Agents write these rows; a maintainer only reads them (or deletes one to forget a
    # retired server's agent).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
