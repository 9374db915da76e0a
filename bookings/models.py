from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from containers.models import Gpu, Host, Image


class ReservationQuerySet(models.QuerySet):
    def live(self) -> "ReservationQuerySet":
        """Reservations that hold capacity: not ended, cancelled or failed."""
        return self.filter(status__in=Reservation.LIVE_STATUSES)

    def overlapping(self, start, end) -> "ReservationQuerySet":
        return self.filter(start__lt=end, end__gt=start)

    def bookings(self) -> "ReservationQuerySet":
        """Interactive bookings, not batch jobs: the ones a user holds one at a time."""
        return self.filter(kind=Reservation.Kind.BOOKING)


class Reservation(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled"
        STARTING = "starting"
        RUNNING = "running"
        ENDED = "ended"
        CANCELLED = "cancelled"
        FAILED = "failed"
        BLOCKED = "blocked"

    class Kind(models.TextChoices):
        BOOKING = "booking"
        JOB = "job"

    class EndedBy(models.TextChoices):
        OWNER = "owner"
        MAINTAINER = "maintainer"
        SYSTEM = "system"
        JOB = "job"

    LIVE_STATUSES = (Status.SCHEDULED, Status.STARTING, Status.RUNNING, Status.BLOCKED)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reservations")
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="reservations")
    kind = models.CharField(
        max_length=8,
        choices=Kind.choices,
        default=Kind.BOOKING,
        db_default=Kind.BOOKING,  # Rows written by raw SQL or COPY are bookings too.
        help_text="A booking (one per user at a time) or a batch job; both hold capacity.",
    )
    start = models.DateTimeField()
    end = models.DateTimeField(help_text="Exclusive: the window is [start, end).")
    booked_end = models.DateTimeField(
        null=True, blank=True, help_text="The end as booked or extended, before any release."
    )
    cpus = models.DecimalField("CPUs", max_digits=6, decimal_places=2)
    memory_gb = models.PositiveIntegerField("Memory (GiB)", help_text="RAM + swap.")
    gpu_count = models.PositiveSmallIntegerField("GPUs", default=0)
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.PROTECT, related_name="reservations"
    )
    extra_command = models.CharField(max_length=1000, blank=True)
    forward_port = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED, db_index=True)
    status_message = models.CharField(max_length=500, blank=True)
    container_id = models.CharField(max_length=80, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(
        max_length=12,
        choices=EndedBy.choices,
        blank=True,
        default="",
        db_default="",
        help_text="Who ended it before its time: its owner (a cancel or release), a maintainer (a stop, "
        "a cancel, a drain), the portal (an idle release), or for a job the job itself. Empty: "
        "it has not ended, or ran to its end.",
    )
    charged_from = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A booking made for now: the moment it was made. Reports charge its hours from "
        "here, not from the start of the slot (docs/reports.md).",
    )
    restart_count = models.PositiveSmallIntegerField(default=0)
    restart_requested = models.BooleanField(
        default=False, help_text="Set by a maintainer; the scheduler recreates the container."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ReservationQuerySet.as_manager()

    class Meta:
        ordering = ["-start", "-id"]
        indexes = [
            models.Index(fields=["host", "end", "start"], name="reservation_host_window"),
            models.Index(fields=["user", "end", "start"], name="reservation_user_window"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(end__gt=F("start")), name="reservation_end_after_start"),
            models.CheckConstraint(condition=Q(cpus__gt=0), name="reservation_cpus_positive"),
        ]

    def __str__(self) -> str:
        # Names in admin and logs read in the lab's time zone, as every page does.
        return f"#{self.pk} {self.user} on {self.host} {timezone.localtime(self.start):%Y-%m-%d %H:%M}"

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES

    def can_cancel(self, now: datetime) -> bool:
        """Only a future reservation is cancelled; one that has started is released."""
        return self.status in (self.Status.SCHEDULED, self.Status.BLOCKED) and self.start > now

    def can_release(self, now: datetime) -> bool:
        return self.is_live and self.start < now < self.end

    def can_extend(self, now: datetime) -> bool:
        return self.is_live and self.end > now

    def gpu_indices(self) -> list[int]:
        """Indices of the GPUs allocated to this reservation, sorted."""
        return sorted({allocation.gpu.index for allocation in self.allocations.all()})


class GpuAllocation(models.Model):
    """One GPU held by one reservation for [start, end). On PostgreSQL an exclusion
    constraint (migration 0002) refuses two active allocations of a GPU that overlap."""

    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="allocations")
    gpu = models.ForeignKey(Gpu, on_delete=models.PROTECT, related_name="allocations")
    start = models.DateTimeField()
    end = models.DateTimeField()
    active = models.BooleanField(default=True, help_text="Off once the reservation is cancelled or failed.")

    class Meta:
        verbose_name = "GPU allocation"
        ordering = ["gpu__index"]
        indexes = [models.Index(fields=["gpu", "end", "start"], name="allocation_gpu_window")]
        constraints = [
            models.CheckConstraint(condition=Q(end__gt=F("start")), name="allocation_end_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.gpu} for reservation #{self.reservation_id}"


class ReservationGpuIndices(models.Model):
    """Each reservation's GPU indices as text ("0 3"), read from a PostgreSQL view
    (migration 0007) so the reservations CSV joins them once instead of asking per row.
    Read-only; no table on SQLite, where reports read the allocations instead. A migration
    that changes a column the view reads must drop and recreate the view around it."""

    reservation = models.OneToOneField(
        Reservation,
        primary_key=True,
        on_delete=models.DO_NOTHING,
        related_name="gpu_indices_row",
        db_column="reservation_id",
    )
    start = models.DateTimeField(
        help_text="The reservation's start, so a report narrows the view to its range."
    )
    indices = models.TextField()

    class Meta:
        managed = False
        db_table = "bookings_reservation_gpu_indices"

    def __str__(self) -> str:
        return f"GPUs {self.indices} of reservation #{self.reservation_id}"


class HostAccess(models.Model):
    """A maintainer's restriction of a host to some users and capability profiles (e.g.
    the A100 server for one project). A host without one, or with nobody listed, is open
    to everyone; the booking rule reads it through `bookings.selectors.hosts_open_to`."""

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="access")
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="host_accesses", help_text="These users may book."
    )
    profiles = models.ManyToManyField(
        "accounts.CapabilityProfile",
        blank=True,
        related_name="host_accesses",
        help_text="Users on these profiles (the default profile: everyone without one) may book.",
    )

    class Meta:
        verbose_name = "host access restriction"

    def __str__(self) -> str:
        return f"who may book {self.host.name}"
