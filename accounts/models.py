from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

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

    LIMIT_FIELDS = ("cpus", "memory_gb", "gpus", "work_space_gb", "backup_space_gb")

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

    objects = LabUserManager()

    def clean(self) -> None:
        super().clean()
        port_range = settings.PORT_RANGE
        if self.forward_port is not None and self.forward_port not in port_range:
            raise ValidationError(
                {"forward_port": f"Choose a port from {port_range.start} to {port_range.stop - 1}."}
            )

    def save(self, *args, **kwargs) -> None:
        # Imported here: the selector module imports this model.
        from accounts.selectors import first_free_forward_port

        self.username = (self.username or "").strip().lower()
        if self.forward_port is not None:
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
