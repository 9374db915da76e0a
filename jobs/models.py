"""Batch jobs (the DoPQ half). A queued job holds nothing; a started job holds a
Reservation of kind `job`, so capacity, GPU allocations and their exclusion constraint
cover jobs and bookings together."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from bookings.models import Reservation
from containers.models import Host, Image


class JobQuerySet(models.QuerySet):
    def queued(self) -> JobQuerySet:
        return self.filter(status=Job.Status.QUEUED)

    def active(self) -> JobQuerySet:
        """Jobs that hold capacity: starting or running."""
        return self.filter(status__in=Job.ACTIVE_STATUSES)


class WaitReason(models.TextChoices):
    """What holds a queued job, as the last scheduling pass found it (shown as "waiting:
    <label>", with a detail the pass wrote)."""

    NONE = "", _("nothing")
    CAPACITY = "capacity", _("free capacity (reservations hold what it needs)")
    QUEUE = "queue", _("the head of the queue")
    GPUS_AT_ONCE = "gpus_at_once", _("your GPUs at once")
    CPUS_AT_ONCE = "cpus_at_once", _("your CPUs at once")
    MEMORY_AT_ONCE = "memory_gb_at_once", _("your memory at once")
    BUDGET = "budget", _("your GPU-hour budget")
    NO_HOST = "no_host", _("no host can run it now")
    # Its limits or its owner's access changed after it was queued: it would wait forever.
    NEVER = "never", _("no host can run it any more")
    # Its owner or a maintainer holds it: the scheduler skips it until it is released.
    HELD = "held", _("held")
    DEPENDENCY = "dependency", _("other jobs it depends on")


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        STARTING = "starting", _("Starting")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")
        TIMED_OUT = "timed_out", _("Timed out")

    ACTIVE_STATUSES = (Status.STARTING, Status.RUNNING)
    FINISHED_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    host = models.ForeignKey(
        Host,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="jobs",
        help_text="Empty: any host the user may use.",
    )
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="jobs")
    command = models.TextField(help_text="Arguments, split like a shell would but never run by one.")
    cpus = models.DecimalField(max_digits=6, decimal_places=2)
    memory_gb = models.PositiveIntegerField()
    gpu_count = models.PositiveSmallIntegerField(default=0)
    time_limit_minutes = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    status_message = models.CharField(max_length=500, blank=True)
    submitted_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    reservation = models.OneToOneField(
        Reservation,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="job",
        help_text="The capacity the job holds once started; empty while queued.",
    )
    planned_start = models.DateTimeField(
        null=True, blank=True, help_text="The scheduler's estimate of when a queued job starts."
    )
    planned_host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    wait_reason = models.CharField(
        max_length=32,
        choices=WaitReason.choices,
        blank=True,
        default=WaitReason.NONE,
        help_text="What held the job at the last scheduling pass.",
    )
    wait_detail = models.CharField(max_length=300, blank=True)
    held_at = models.DateTimeField(
        null=True, blank=True, help_text="Held: the scheduler skips it until released; its submit time stays."
    )
    held_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    log_size = models.PositiveBigIntegerField(default=0)
    log_truncated = models.BooleanField(default=False)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-submitted_at", "-id"]
        indexes = [models.Index(fields=["status", "submitted_at"], name="job_status_submitted")]
        constraints = [
            models.CheckConstraint(condition=Q(cpus__gt=0), name="job_cpus_positive"),
            models.CheckConstraint(condition=Q(time_limit_minutes__gt=0), name="job_time_limit_positive"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(finished_at__gte=F("submitted_at")),
                name="job_finished_after_submit",
            ),
        ]

    def __str__(self) -> str:
        return f"job #{self.pk} of {self.user}"

    @property
    def time_limit(self) -> timedelta:
        return timedelta(minutes=self.time_limit_minutes)

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES

    @property
    def waiting_for(self) -> str | None:
        """What held this queued job at the last scheduling pass, in words; None if it is
        not waiting or no pass has looked at it yet."""
        if self.status != self.Status.QUEUED or not self.wait_reason:
            return None
        label = str(WaitReason(self.wait_reason).label)
        return f"{label}: {self.wait_detail}" if self.wait_detail else label

    @property
    def can_hold(self) -> bool:
        return self.status == self.Status.QUEUED and self.held_at is None

    @property
    def can_release(self) -> bool:
        return self.status == self.Status.QUEUED and self.held_at is not None

    @property
    def can_cancel(self) -> bool:
        return self.status == self.Status.QUEUED or self.status in self.ACTIVE_STATUSES


class JobDependency(models.Model):
    """The job starts only once `on` has finished as `condition` asks (Slurm's afterok,
    afterany, afternotok). Dependencies name jobs that exist when the job is submitted,
    so no cycle can form."""

    class Condition(models.TextChoices):
        OK = "afterok", _("after it succeeds")
        ANY = "afterany", _("after it finishes")
        NOT_OK = "afternotok", _("after it fails")

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="dependencies")
    on = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="dependents")
    condition = models.CharField(max_length=16, choices=Condition.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "on"], name="job_dependency_once")]

    def __str__(self) -> str:
        return f"job #{self.job_id} {self.condition}:{self.on_id}"

    def verdict(self, on_status: str) -> bool | None:
        """True: met; False: can never be met; None: not yet (`on` has not finished)."""
        if on_status not in Job.FINISHED_STATUSES:
            return None
        succeeded = on_status == Job.Status.SUCCEEDED
        if self.condition == self.Condition.OK:
            return succeeded
        if self.condition == self.Condition.NOT_OK:
            return not succeeded
        return True


class QueueState(models.Model):
    """The one row that says whether the queue is paused, by whom and since when (DoPQ's
    lock had no owner and no record)."""

    paused = models.BooleanField(default=False)
    paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    paused_since = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "queue state"

    def __str__(self) -> str:
        return (
            f"paused by {self.paused_by} since {self.paused_since:%Y-%m-%d %H:%M}"
            if self.paused
            else "running"
        )


class HostDrain(models.Model):
    """A host that starts no new jobs (running ones finish): who drained it and when."""

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="job_drain")
    drained_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    drained_since = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.host} drained since {self.drained_since:%Y-%m-%d %H:%M}"


class JobBuild(models.Model):
    """The image a DoPQ upload builds for its job. While it builds, the job is queued but
    the scheduler passes it over; a failed build fails the job. The image is tagged under
    the user's name and recorded as an inactive Image, so no booking or other job can pick it."""

    class Status(models.TextChoices):
        BUILDING = "building", _("Building")
        BUILT = "built", _("Built")
        FAILED = "failed", _("Build failed")

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="build")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING, db_index=True)
    name = models.CharField(max_length=64)
    executor_name = models.CharField(max_length=64)
    context_file = models.CharField(
        max_length=100,
        blank=True,
        help_text="The checked build context (a tar) in JOB_BUILD_CONTEXT_ROOT; removed once built.",
    )
    context_size = models.PositiveBigIntegerField(default=0)
    context_digest = models.CharField(max_length=64)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"build of job #{self.job_id} ({self.status})"
