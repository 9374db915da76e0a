from datetime import datetime, timedelta

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
    container_address = models.CharField(
        max_length=64,
        blank=True,
        help_text="The container's address on the portal's bridge network, recorded by the "
        "host's agent at launch: where the JupyterLab proxy reaches it.",
    )
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


class WaitlistEntry(models.Model):
    """A booking that did not fit, waiting for capacity to free up. It holds nothing: no
    reservation, no GPU allocation, no capacity row; the waitlist tick books it through the
    one booking service (`reservation_create`) when a window fits, so every rule applies.

    Either the window asked for (earliest start = latest start) or the first window of its
    length starting in [earliest start, latest start]; it expires at its latest start."""

    class Status(models.TextChoices):
        WAITING = "waiting"
        BOOKED = "booked"
        EXPIRED = "expired"
        WITHDRAWN = "withdrawn"

    class Mode(models.TextChoices):
        WINDOW = "window", "this window when it frees up"
        FIRST_AFTER = "first_after", "the first window of this length after the start"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="waitlist_entries"
    )
    host = models.ForeignKey(
        Host,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="waitlist_entries",
        help_text="Empty: any host open to the user.",
    )
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.WINDOW)
    earliest_start = models.DateTimeField()
    latest_start = models.DateTimeField(help_text="The entry expires at this moment if it is still waiting.")
    duration_minutes = models.PositiveIntegerField()
    cpus = models.DecimalField("CPUs", max_digits=6, decimal_places=2)
    memory_gb = models.PositiveIntegerField("Memory (GiB)")
    gpu_count = models.PositiveSmallIntegerField("GPUs", default=0)
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    extra_command = models.CharField(max_length=1000, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.WAITING, db_index=True)
    status_message = models.CharField(
        max_length=500, blank=True, help_text="Why the last try did not book it, or how it ended."
    )
    reservation = models.OneToOneField(
        Reservation, null=True, blank=True, on_delete=models.SET_NULL, related_name="waitlist_entry"
    )
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was booked, expired or withdrawn."
    )

    class Meta:
        verbose_name = "waiting booking request"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "latest_start"], name="waitlist_status_latest")]
        constraints = [
            models.CheckConstraint(
                condition=Q(latest_start__gte=F("earliest_start")), name="waitlist_latest_after_earliest"
            ),
            models.CheckConstraint(condition=Q(duration_minutes__gt=0), name="waitlist_duration_positive"),
            models.CheckConstraint(condition=Q(cpus__gt=0), name="waitlist_cpus_positive"),
        ]

    def __str__(self) -> str:
        where = self.host.name if self.host_id else "any host"
        start = timezone.localtime(self.earliest_start)
        return f"waiting #{self.pk} {self.user} on {where} from {start:%Y-%m-%d %H:%M}"

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)

    @property
    def duration_hours(self) -> str:
        """The length as people write it: 24, 1.5."""
        return f"{self.duration_minutes / 60:g}"

    @property
    def is_waiting(self) -> bool:
        return self.status == self.Status.WAITING
