"""Inventory and monitor records: the bottom layer, imports nothing of the portal but the
leaf command parser."""

from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext

from containers.commands import command_problem


class Host(models.Model):
    name = models.CharField(max_length=64, unique=True)
    address = models.CharField(max_length=255, blank=True, help_text="Host name or IP that users ssh to.")
    docker_url = models.CharField(
        max_length=255, blank=True, help_text="Docker engine URL; blank means the local engine."
    )
    cpus = models.PositiveIntegerField("CPUs", help_text="CPUs the host lends to containers.")
    ram_gb = models.PositiveIntegerField("RAM (GiB)", help_text="RAM the host lends, GiB.")
    swap_gb = models.PositiveIntegerField("Swap (GiB)", default=0, help_text="Swap the host lends, GiB.")
    max_work_space_gb = models.PositiveIntegerField(
        default=500, help_text="Work folder quota a 'host maximum' profile resolves to, GiB."
    )
    max_backup_space_gb = models.PositiveIntegerField(
        default=200, help_text="Backup folder quota a 'host maximum' profile resolves to, GiB."
    )
    max_home_space_gb = models.PositiveIntegerField(
        default=50, help_text="Persistent home quota a 'host maximum' profile resolves to, GiB."
    )
    work_root = models.CharField(max_length=255, default="/mnt/Users")
    dataset_root = models.CharField(max_length=255, default="/mnt/Dataset")
    backup_root = models.CharField(max_length=255, default="/mnt/Backup")
    accepting_bookings = models.BooleanField(
        default=True, help_text="Off: maintenance lock, new reservations are refused."
    )
    served_by_agent = models.BooleanField(
        default=False,
        help_text="On: this server runs its own agent (AIVC_HOST=<name> manage.py qcluster) and "
        "all its container, folder, disk and GPU work is queued to it. Off: the central "
        "scheduler does that work on the portal's own machine (a one-server lab). Set "
        "automatically when an agent starts for the host.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def memory_gb(self) -> int:
        """Memory a container may book: RAM plus swap (the old `max.memory`)."""
        return self.ram_gb + self.swap_gb

    @cached_property
    def active_gpus(self) -> list["Gpu"]:
        """The GPUs in service, by index; read once per Host instance."""
        return list(self.gpus.filter(is_active=True).order_by("index"))

    @property
    def ram_rate(self) -> float:
        """Share of booked memory that is RAM (the old `shm_rate`)."""
        return self.ram_gb / self.memory_gb if self.memory_gb else 1.0


class Gpu(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    uuid = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=128, blank=True)
    memory_mb = models.PositiveIntegerField("Memory (MiB)", default=0)
    is_active = models.BooleanField(
        default=True, help_text="Off: the GPU is out of service and never allocated."
    )

    class Meta:
        verbose_name = "GPU"
        verbose_name_plural = "GPUs"
        ordering = ["host", "index"]
        constraints = [models.UniqueConstraint(fields=["host", "index"], name="gpu_unique_host_index")]

    def __str__(self) -> str:
        return f"{self.host.name} GPU {self.index}"


class Image(models.Model):
    class Login(models.TextChoices):
        KEYS = "keys", "SSH keys mounted by the portal"
        PASSWORD = "password", "Password variable (legacy image, cannot be booked)"

    reference = models.CharField(max_length=255, unique=True, help_text='"repo:tag"')
    description = models.CharField(max_length=255, blank=True)
    cuda_version = models.CharField(
        max_length=32,
        blank=True,
        help_text='The CUDA version the image is built for, e.g. "12.4"; a GPU booking on a host '
        "whose driver supports an older CUDA is refused. Empty: not checked.",
    )
    lab_modes = models.BooleanField(
        "Lab modes",
        default=False,
        help_text="Built from deploy/images: the portal picks the mode (a booking's sshd, a job's "
        "command as the main process, JupyterLab). Off: the image runs as it is, and a job's "
        "command is run as the image's command.",
    )
    is_default = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    start_command = models.CharField(max_length=1000, blank=True, help_text="Empty: the image's own command.")
    login = models.CharField(
        max_length=16,
        choices=Login.choices,
        default=Login.KEYS,
        help_text="How users log in. Legacy images that expect a PASSWORD variable cannot be "
        "entered: the portal never passes passwords, so they are refused at booking.",
    )

    class Meta:
        ordering = ["reference"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="image_single_default",
            )
        ]

    def __str__(self) -> str:
        return self.reference

    def clean(self) -> None:
        problem = command_problem(self.start_command)
        if problem:
            raise ValidationError(
                {"start_command": f"Wrong Input! The start command cannot be read as arguments ({problem})."}
            )

    @property
    def takes_portal_keys(self) -> bool:
        """Whether a user can log in to a container of this image with the keys the portal
        mounts; a legacy password image started without a password lets nobody in."""
        return self.login == self.Login.KEYS


class ImagePresence(models.Model):
    """Whether a host's engine holds an image, kept by the host's agent: checked when a
    reservation is made and pulled ahead of its start, so a missing image shows at once."""

    class State(models.TextChoices):
        PRESENT = "present", "Present"
        PULLING = "pulling", "Pulling"
        MISSING = "missing", "Missing"
        FAILED = "failed", "Pull failed"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="image_presences")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="presences")
    state = models.CharField(max_length=16, choices=State.choices, default=State.MISSING)
    progress = models.CharField(max_length=200, blank=True, help_text="The engine's last pull progress line.")
    message = models.TextField(blank=True, help_text="The engine's own words when a pull failed.")
    checked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["host", "image"]
        constraints = [
            models.UniqueConstraint(fields=["host", "image"], name="imagepresence_unique_host_image")
        ]

    def __str__(self) -> str:
        return f"{self.image} on {self.host}: {self.get_state_display()}"

    @property
    def is_problem(self) -> bool:
        return self.state in (self.State.MISSING, self.State.FAILED)


class ContainerEvent(models.Model):
    class Level(models.TextChoices):
        INFO = "INFO"
        WARNING = "WARNING"
        ERROR = "ERROR"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    sign = models.CharField(max_length=64, blank=True, help_text="e.g. SpaceWarning")
    message = models.TextField()
    # The line said again in the reader's language (containers.events.said): the English
    # pattern, a msgid of the catalogue, and its values. Empty: the message is all there is.
    template = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    # Parameters whose value is itself a msgid (a job's status word), translated too.
    TRANSLATED_PARAMS = frozenset({"status_word"})
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reservation = models.ForeignKey(
        "bookings.Reservation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
    )
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["level", "created_at"])]

    def __str__(self) -> str:
        return self.as_log_line()

    def sentence(self) -> str:
        """The line in the active language: the pattern translated and filled in; the stored
        English message when it has no pattern or the translation does not fit its values."""
        if not self.template:
            return self.message
        params = {
            key: gettext(value) if key in self.TRANSLATED_PARAMS and isinstance(value, str) else value
            for key, value in (self.params or {}).items()
        }
        try:
            return gettext(self.template) % params
        except (KeyError, TypeError, ValueError):
            return self.message

    def as_log_line(self) -> str:
        """The old monitor.log format: `YYYYMMDD HH:MM [LEVEL] Sign, message.`"""
        stamp = timezone.localtime(self.created_at).strftime("%Y%m%d %H:%M")
        message = self.message if self.message.endswith(".") else f"{self.message}."
        if self.level == self.Level.INFO or not self.sign:
            return f"{stamp} [{self.level}] {message}"
        return f"{stamp} [{self.level}] {self.sign}, {message}"


class SpaceAudit(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="space_audits")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="space_audits")
    work_gb = models.FloatField(null=True, blank=True)
    backup_gb = models.FloatField(null=True, blank=True)
    home_gb = models.FloatField(null=True, blank=True)
    measured_at = models.DateTimeField(default=timezone.now)
    complete = models.BooleanField(
        default=True, help_text="Off: the measurement timed out; the size is unknown."
    )
    over_quota = models.BooleanField(default=False)
    unreadable = models.CharField(
        max_length=1000,
        blank=True,
        help_text="A folder the audit could not read (e.g. Work/private); it counts as over quota.",
    )

    class Meta:
        ordering = ["-measured_at"]
        get_latest_by = "measured_at"
        indexes = [models.Index(fields=["user", "host", "-measured_at"])]

    def __str__(self) -> str:
        return f"{self.user} on {self.host} at {self.measured_at:%Y-%m-%d %H:%M}"


# Agents ---------------------------------------------------------------------------------


class HostAgent(models.Model):
    """The agent serving one host: who holds the host (a lease the agent renews with every
    heartbeat, so a second agent for the same host refuses to start) and what it last
    reported about its server."""

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="agent")
    holder = models.CharField(
        max_length=200, blank=True, help_text="machine:pid:token of the agent holding the host; empty: none."
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=64, blank=True, help_text="Portal version the agent runs.")
    engine_version = models.CharField(max_length=64, blank=True, help_text="Docker engine version.")
    nvml_driver = models.CharField(max_length=64, blank=True, help_text="NVIDIA driver version.")
    cuda_driver_version = models.CharField(
        "CUDA driver version",
        max_length=16,
        blank=True,
        help_text='The newest CUDA the NVIDIA driver supports, e.g. "12.4"; empty: no driver.',
    )
    disk_free_gb = models.JSONField(
        default=dict, blank=True, help_text="Free GiB of each folder root (null: unreadable)."
    )
    silent_since = models.DateTimeField(
        null=True, blank=True, help_text="Set while the agent is reported silent; cleared when it is back."
    )

    class Meta:
        ordering = ["host__name"]

    def __str__(self) -> str:
        return f"agent of {self.host.name}"
