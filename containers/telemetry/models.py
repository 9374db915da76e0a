"""GPU telemetry records: NVML samples, what they say about each reservation's GPUs, and
processes seen on GPUs they hold no booking for. The tables keep the names they had when
these models lived in `containers` (db_table), so existing databases keep their rows."""

from django.db import models


class GpuSample(models.Model):
    """One NVML reading of one GPU, taken every minute; pruned after
    GPU_SAMPLE_RETENTION_DAYS."""

    gpu = models.ForeignKey("containers.Gpu", on_delete=models.CASCADE, related_name="samples")
    taken_at = models.DateTimeField()
    utilisation_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Empty: the device does not report utilisation."
    )
    memory_used_mb = models.PositiveIntegerField()
    process_count = models.PositiveSmallIntegerField(default=0)

    class Meta:
        db_table = "containers_gpusample"
        ordering = ["-taken_at", "gpu_id"]
        get_latest_by = "taken_at"
        indexes = [
            # Covers the utilisation too, so counting a hold's busy samples (the usage
            # page) reads the index alone (PostgreSQL; other databases ignore `include`).
            models.Index(
                fields=["gpu", "taken_at"], include=["utilisation_percent"], name="gpusample_gpu_taken_util"
            ),
            models.Index(fields=["taken_at"], name="gpusample_taken_at"),
        ]

    def __str__(self) -> str:
        return f"{self.gpu} at {self.taken_at:%Y-%m-%d %H:%M}"


class ReservationGpuStatus(models.Model):
    """What telemetry concluded about one reservation's GPUs; kept beside the reservation
    rather than on it, so the booking tables stay the booking layer's."""

    reservation = models.OneToOneField(
        "bookings.Reservation", on_delete=models.CASCADE, related_name="gpu_status"
    )
    checked_at = models.DateTimeField(null=True, blank=True)
    idle_flagged_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set while every GPU of the reservation stays under the idle threshold.",
    )
    auto_released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "containers_reservationgpustatus"
        verbose_name = "reservation GPU status"
        verbose_name_plural = "reservation GPU statuses"
        ordering = ["-checked_at"]

    def __str__(self) -> str:
        return f"GPU status of reservation #{self.reservation_id}"

    @property
    def is_idle(self) -> bool:
        return self.idle_flagged_at is not None


class GpuDuplicateUse(models.Model):
    """A process seen on a GPU it has no booking for. One row, and so one warning, per GPU,
    pid and holding reservation (none: the GPU was not booked)."""

    gpu = models.ForeignKey("containers.Gpu", on_delete=models.CASCADE, related_name="duplicate_uses")
    pid = models.PositiveIntegerField()
    holder = models.ForeignKey(
        "bookings.Reservation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="duplicate_uses",
        help_text="The reservation that held the GPU; empty: nobody had booked it.",
    )
    container_id = models.CharField(max_length=80, blank=True, help_text="Empty: a host process.")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    event = models.ForeignKey("containers.ContainerEvent", null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        db_table = "containers_gpuduplicateuse"
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu", "pid", "holder"],
                condition=models.Q(holder__isnull=False),
                name="gpuduplicateuse_once_per_holder",
            ),
            models.UniqueConstraint(
                fields=["gpu", "pid"],
                condition=models.Q(holder__isnull=True),
                name="gpuduplicateuse_once_unbooked",
            ),
        ]

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.gpu}"
