from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import IntegrityError, models, transaction
from django.utils import timezone

PORT_ATTEMPTS = 5


class CapabilityProfile(models.Model):
    """Per-user maxima. On a non-default profile a null field inherits the default's value;
    on the default profile a null field means the host maximum (the old `max` keyword)."""

    name = models.CharField(max_length=64, unique=True)
    is_default = models.BooleanField(default=False)
    cpus = models.DecimalField("CPUs", max_digits=6, decimal_places=2, null=True, blank=True)
    memory_gb = models.PositiveIntegerField(
        "Memory (GiB)", null=True, blank=True, help_text="RAM + swap a container may use."
    )
    gpus = models.PositiveSmallIntegerField("GPUs", null=True, blank=True)
    work_space_gb = models.PositiveIntegerField("Work space (GiB)", null=True, blank=True)
    backup_space_gb = models.PositiveIntegerField("Backup space (GiB)", null=True, blank=True)
    home_space_gb = models.PositiveIntegerField(
        "Home space (GiB)",
        null=True,
        blank=True,
        help_text="The persistent home (/root in the container: dotfiles, virtualenvs, conda).",
    )
    job_time_limit_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Longest batch job time limit, minutes (default profile: empty = the lab's).",
    )
    queued_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most batch jobs waiting at once (default profile: empty = the lab's).",
    )

    # What one user holds at any instant across bookings and jobs, and a rolling GPU-hour
    # budget; read through bookings.limits.limits_for (not per host, so not in LIMIT_FIELDS).
    gpus_at_once = models.PositiveSmallIntegerField(
        "GPUs at once",
        null=True,
        blank=True,
        help_text="Most GPUs one user holds at any moment, bookings and jobs together "
        "(default profile: empty = no cap beyond the per-request maximum).",
    )
    cpus_at_once = models.DecimalField(
        "CPUs at once",
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Most CPUs one user holds at any moment, bookings and jobs together.",
    )
    memory_gb_at_once = models.PositiveIntegerField(
        "Memory at once (GiB)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Most memory one user holds at any moment, bookings and jobs together.",
    )
    gpu_hours_per_week = models.DecimalField(
        "GPU-hours per week",
        max_digits=8,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="GPU-hours of one user's bookings and jobs in any 7-day window "
        "(default profile: empty = no budget).",
    )

    USAGE_LIMIT_FIELDS = ("gpus_at_once", "cpus_at_once", "memory_gb_at_once", "gpu_hours_per_week")

    LIMIT_FIELDS = (
        "cpus",
        "memory_gb",
        "gpus",
        "work_space_gb",
        "backup_space_gb",
        "home_space_gb",
        "job_time_limit_minutes",
        "queued_jobs",
    )

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="capabilityprofile_single_default",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (default)" if self.is_default else self.name


class LabUserManager(UserManager):
    def get_by_natural_key(self, username: str):
        return self.get(**{self.model.USERNAME_FIELD: (username or "").strip().lower()})


class User(AbstractUser):
    """A lab account. `username` is the lab account id, always lower-case."""

    forward_port = models.PositiveIntegerField(
        unique=True,
        null=True,
        blank=True,
        help_text="Host port forwarded to the container's SSH; assigned from the free ports.",
    )
    ssh_public_keys = models.TextField(blank=True, help_text="One OpenSSH public key per line.")
    default_image = models.ForeignKey(
        "containers.Image", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    default_extra_command = models.CharField(max_length=1000, blank=True)
    capability_profile = models.ForeignKey(
        CapabilityProfile,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="users",
        help_text="Empty: the default profile.",
    )
    must_change_password = models.BooleanField(default=False)
    # Empty until chosen: pages follow the browser, mails and calendars the lab's language.
    language = models.CharField(
        max_length=16,
        choices=settings.LANGUAGES,
        blank=True,
        help_text="Pages, e-mails, notices and calendar entries are written in it.",
    )

    objects = LabUserManager()

    @property
    def preferred_language(self) -> str:
        """The language of what is written to this user away from a request (mails, notices,
        calendar entries): their choice, else the lab's."""
        return self.language or settings.LANGUAGE_CODE

    def clean(self) -> None:
        super().clean()
        port_range = settings.PORT_RANGE
        if self.forward_port is not None and self.forward_port not in port_range:
            raise ValidationError(
                {"forward_port": f"Choose a port from {port_range.start} to {port_range.stop - 1}."}
            )

    @property
    def may_book_by_default(self) -> bool:
        """Students book; staff and superusers seldom do, so their accounts get no forward
        port at creation (a small PORT_RANGE then never stops creating them): one is
        assigned when their first booking needs it (accounts.services.forward_port_ensure)."""
        return not (self.is_staff or self.is_superuser)

    def save(self, *args, **kwargs) -> None:
        # Imported here: the selector module imports this model.
        from accounts.selectors import first_free_forward_port

        self.username = (self.username or "").strip().lower()
        if self.forward_port is not None or not self.may_book_by_default:
            super().save(*args, **kwargs)
            return
        # Two accounts created at once may pick the same free port; the unique index
        # refuses the second, which then takes the next free one.
        for attempt in range(PORT_ATTEMPTS):
            self.forward_port = first_free_forward_port(any_free=attempt > 0)
            try:
                with transaction.atomic():
                    super().save(*args, **kwargs)
                return
            except IntegrityError:
                self.forward_port = None
                if attempt == PORT_ATTEMPTS - 1:
                    raise


class ApiToken(models.Model):
    """A personal access token for scripts and the `aivc` client. Only a SHA-256 of the
    token is kept (the token is 32 random bytes, so a plain hash cannot be brute-forced);
    `prefix` finds the row without scanning every hash."""

    PREFIX_LENGTH = 12

    class Scope(models.TextChoices):
        # Neither scope manages tokens or SSH keys: that needs a logged-in browser session.
        READ = "read", "Read only"
        BOOK = "book", "Read, book and run jobs"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.BOOK)
    last_used_from = models.GenericIPAddressField(null=True, blank=True)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user}, aivc_{self.prefix}…)"

    def is_usable(self, now) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class NotificationKind(models.TextChoices):
    RUNNING = "running", "Container running"
    ENDING_SOON = "ending_soon", "Reservation ending soon"
    ENDED = "ended", "Reservation ended"
    STOPPED = "stopped", "Reservation stopped or cancelled by a maintainer or the portal"
    BLOCKED = "blocked", "Launch blocked"
    FAILED = "failed", "Launch failed"
    IDLE = "idle", "GPUs idle"
    JOB_FINISHED = "job_finished", "Job finished"
    ENGINE_DOWN = "engine_down", "Engine or agent down (maintainers)"
    GPU_DUPLICATE = "gpu_duplicate", "GPU used by someone else (maintainers)"
    LOGIN_FLOOD = "login_flood", "Flood of failed logins (maintainers)"
    WAITLIST_BOOKED = "waitlist_booked", "Waiting booking request booked"
    WAITLIST_EXPIRED = "waitlist_expired", "Waiting booking request expired"
    LIMIT_ANSWERED = "limit_answered", "Request for more answered"
    GRANT_EXPIRED = "grant_expired", "Granted limit ended"
    JOB_CANNOT_RUN = "job_cannot_run", "Queued job can no longer run"
    JOB_STARTED = "job_started", "Job started"
    JOB_NEAR_LIMIT = "job_near_limit", "Job near its time limit"


class Notification(models.Model):
    """One thing a user is told, in the portal and, if they chose so, by e-mail. `key` names
    the event (kind, object, instant): the unique index makes a second tick, or a tick after
    a crash, a no-op."""

    class Email(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        SKIPPED = "skipped"
        FAILED = "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    key = models.CharField(max_length=200, unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(db_index=True)
    read_at = models.DateTimeField(null=True, blank=True)
    email = models.CharField(max_length=8, choices=Email.choices, default=Email.PENDING, db_index=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_user_unread")]

    def __str__(self) -> str:
        return f"{self.user}: {self.title}"


def default_email_kinds() -> list[str]:
    return [
        NotificationKind.ENDING_SOON,
        NotificationKind.STOPPED,
        NotificationKind.BLOCKED,
        NotificationKind.FAILED,
        NotificationKind.JOB_FINISHED,
        NotificationKind.ENGINE_DOWN,
        NotificationKind.GPU_DUPLICATE,
        NotificationKind.LOGIN_FLOOD,
        NotificationKind.WAITLIST_BOOKED,
        NotificationKind.WAITLIST_EXPIRED,
        NotificationKind.LIMIT_ANSWERED,
        NotificationKind.GRANT_EXPIRED,
        NotificationKind.JOB_CANNOT_RUN,
        NotificationKind.JOB_NEAR_LIMIT,
    ]


class UserChannels(models.Model):
    """Per-user delivery settings kept off the User row: which notification kinds also go
    by e-mail, and the salt behind the secret calendar feed URL (reset: a new salt)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="channels")
    email_kinds = models.JSONField(default=default_email_kinds, blank=True)
    calendar_salt = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"Channels of {self.user}"


class LimitKind(models.TextChoices):
    BUDGET = "budget", "A bigger weekly GPU-hour budget"
    CAPS = "caps", "Bigger caps at once"
    PROFILE = "profile", "Another capability profile"
    BOOST = "boost", "A fair-share priority boost"


class LimitAsk(models.Model):
    """What a request asks for, and what a grant gives: one kind, its values, until when."""

    kind = models.CharField(max_length=8, choices=LimitKind.choices)
    gpu_hours_per_week = models.DecimalField(
        "GPU-hours per week", max_digits=8, decimal_places=1, null=True, blank=True, help_text="Budget only."
    )
    gpus_at_once = models.PositiveSmallIntegerField("GPUs at once", null=True, blank=True)
    cpus_at_once = models.DecimalField("CPUs at once", max_digits=6, decimal_places=2, null=True, blank=True)
    memory_gb_at_once = models.PositiveIntegerField("Memory at once (GiB)", null=True, blank=True)
    profile = models.ForeignKey(
        CapabilityProfile,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Another profile only.",
    )
    ends_at = models.DateTimeField(help_text="The grant ends by itself at this moment.")

    class Meta:
        abstract = True

    @property
    def last_day(self):
        """The last day it applies, in the lab's time zone (it ends at the next midnight)."""
        return timezone.localtime(self.ends_at - timedelta(microseconds=1)).date()

    def summary(self) -> str:
        """What is asked or given, in a few words (admin lists, notices)."""
        if self.kind == LimitKind.BUDGET:
            return f"{self.gpu_hours_per_week} GPU-hours per week"
        if self.kind == LimitKind.CAPS:
            parts = [
                f"{value} {name}"
                for value, name in (
                    (self.gpus_at_once, "GPUs"),
                    (self.cpus_at_once, "CPUs"),
                    (self.memory_gb_at_once, "GiB"),
                )
                if value is not None
            ]
            return "at once: " + ", ".join(parts)
        if self.kind == LimitKind.PROFILE:
            return f"profile {self.profile.name if self.profile_id else '?'}"
        return "priority boost"


class LimitRequest(LimitAsk):
    """A student's request for more, with a reason; a maintainer approves (which makes a
    time-limited LimitGrant) or denies it, with a note the student reads. Rows are kept:
    the history stays in admin."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="limit_requests"
    )
    reason = models.TextField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True, help_text="The maintainer's answer; the student reads it.")

    class Meta:
        verbose_name = "request for more"
        verbose_name_plural = "requests for more"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.user}: {self.summary()} ({self.status})"


class LimitGrant(LimitAsk):
    """A time-limited raise for one user, made by approving a request. Active while
    starts_at <= now < ends_at: the effective limits read only active grants, so it ends by
    itself; `ended_at` records that the expiry task saw it end and told the student."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="limit_grants")
    request = models.OneToOneField(
        LimitRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="grant"
    )
    starts_at = models.DateTimeField()
    usage_factor = models.DecimalField(
        max_digits=4,
        decimal_places=2,
        default=Decimal("0.5"),
        help_text="Boost only: the user's fair-share usage counts this much (0.5: half, 0: first in line).",
    )
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True, help_text="When the expiry task saw it end.")

    class Meta:
        ordering = ["-starts_at", "-id"]
        indexes = [models.Index(fields=["user", "ends_at"], name="limitgrant_user_end")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="limitgrant_ends_after_start"
            ),
            models.CheckConstraint(
                condition=models.Q(usage_factor__gte=0, usage_factor__lte=1),
                name="limitgrant_usage_factor_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.summary()} until {self.ends_at:%Y-%m-%d}"

    def is_active(self, now) -> bool:
        return self.starts_at <= now < self.ends_at
