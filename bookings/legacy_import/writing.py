"""Writes parsed records (`records.py`) through the services the admin and the rest of
the portal use: hosts, GPUs and images (`containers/inventory_services.py`), profiles and
accounts (`accounts/services.py`), reservations (`bookings/import_services.reservation_import`,
which asks the capacity engine). Runs inside the caller's transaction; each record in its
own savepoint, so one refused record is reported with its line and the others are still
tried (the caller then rolls everything back)."""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import CapabilityProfile, User
from accounts.services import (
    default_profile_update,
    forward_port_ensure,
    profile_create_or_update,
    user_change_forward_port,
    user_create,
    user_update_lab_settings,
)
from aivc_portal.model_updates import Saved
from bookings.import_services import reservation_import
from bookings.legacy_import.records import (
    CAPABILITY_CONFIG,
    HOST_DEPLOY,
    ImageRecord,
    LegacyData,
    Problem,
    ProfileRecord,
    ReservationRecord,
    UserRecord,
)
from containers.inventory_services import host_create_or_update, host_gpus_ensure, image_create_or_update
from containers.models import Gpu, Host, Image


@dataclass
class ImportReport:
    """What the import did (or, in a dry run, would do); no secrets in here."""

    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Generated passwords of new accounts that had no users_config entry: shown once.
    one_time_passwords: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False

    def count(self, kind: str, action: str, description: str) -> None:
        per_kind = self.counts.setdefault(kind, {"created": 0, "updated": 0, "unchanged": 0})
        per_kind[action] += 1
        if action != "unchanged":
            self.changes.append(f"{'create' if action == 'created' else 'update'} {kind} {description}")

    def saved(self, kind: str, description: str, saved: Saved) -> None:
        if saved.changed and not saved.created:
            description = f"{description} ({', '.join(saved.changed)})"
        self.count(kind, saved.action, description)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


class _Writer:
    def __init__(self, *, data: LegacyData, host_name: str, report: ImportReport) -> None:
        self.data, self.host_name, self.report = data, host_name, report
        self.problems: list[Problem] = []
        self.host: Host | None = None
        self.gpus: dict[int, Gpu] = {}
        self.images: dict[str, Image] = {}
        self.profiles: dict[str, CapabilityProfile] = {}
        self.users: dict[str, User] = {}

    def attempt(
        self,
        file: str,
        line: int | None,
        write: Callable[[], None],
        *,
        prefix: str = "",
        savepoint: bool = True,
    ) -> bool:
        """Runs `write` in a savepoint (unless the service keeps its own); a refusal
        becomes a problem at (file, line). Returns whether it was written."""
        try:
            with transaction.atomic() if savepoint else nullcontext():
                write()
            return True
        except ValidationError as error:
            reason = " ".join(error.messages)
        except IntegrityError as error:
            reason = f"the database refused it ({error.__cause__ or error})"
        self.problems.append(Problem(file=file, line=line, message=f"{prefix}{reason}"))
        return False

    def run(self) -> list[Problem]:
        if not self.attempt(CAPABILITY_CONFIG, None, self.write_host, prefix=f"host {self.host_name}: "):
            return self.problems  # nothing below can be written without the host
        for record in self.data.images:
            self.attempt(HOST_DEPLOY, None, partial(self.write_image, record))
        default = self.data.default_profile
        self.attempt(CAPABILITY_CONFIG, default.line, self.write_default_profile)
        for record in self.data.profiles:
            self.attempt(
                CAPABILITY_CONFIG,
                record.line,
                partial(self.write_profile, record),
                prefix=f"profile {record.name}: ",
            )
        # Accounts with a port from the file first, so a free port handed to an account
        # without one can never be a port another account's entry claims.
        for record in sorted(self.data.users, key=lambda record: record.forward_port is None):
            self.attempt(record.file, record.line, partial(self.write_user, record))
        for record in self.data.reservations:
            if record.username in self.users:  # else its account was refused, and said so
                # reservation_import rolls back its own savepoint when it refuses a row.
                self.attempt(
                    record.file, record.line, partial(self.write_reservation, record), savepoint=False
                )
        return self.problems

    # Inventory ---------------------------------------------------------------------------

    def write_host(self) -> None:
        record = self.data.host
        saved = host_create_or_update(
            name=self.host_name,
            cpus=record.cpus,
            ram_gb=record.ram_gb,
            swap_gb=record.swap_gb,
            max_work_space_gb=record.work_space_gb,
            max_backup_space_gb=record.backup_space_gb,
            work_root=record.work_root,
            dataset_root=record.dataset_root,
            backup_root=record.backup_root,
        )
        self.host = saved.instance
        self.report.saved("host", self.host_name, saved)
        self.gpus, created = host_gpus_ensure(host=self.host, count=record.gpus)
        for index in range(record.gpus):
            action = "created" if index in created else "unchanged"
            self.report.count("gpu", action, f"{self.host.name} GPU {index}")

    def write_image(self, record: ImageRecord) -> None:
        if record.is_default:
            previous = Image.objects.filter(is_default=True).exclude(reference=record.reference).first()
            if previous is not None:
                # The image service steps the old default down; the report says so.
                self.report.count("image", "updated", f"{previous.reference} (is_default)")
        if record.listed:
            saved = image_create_or_update(
                reference=record.reference, is_default=record.is_default, is_active=True
            )
            self.report.saved("image", record.reference, saved)
            image = saved.instance
        else:
            # Named only by old history or a user: kept for the record, never offered; an
            # image the portal already has is left as it is.
            image = Image.objects.filter(reference=record.reference).first() or self.unlisted_image(record)
        self.images[record.reference] = image

    def unlisted_image(self, record: ImageRecord) -> Image:
        saved = image_create_or_update(reference=record.reference, is_active=False)
        self.report.saved("image", f"{record.reference} (not in host_deploy.yaml: inactive)", saved)
        return saved.instance

    # Accounts ----------------------------------------------------------------------------

    def write_default_profile(self) -> None:
        saved = default_profile_update(**self.data.default_profile.limits())
        self.report.saved("profile", saved.instance.name, saved)

    def write_profile(self, record: ProfileRecord) -> None:
        saved = profile_create_or_update(name=record.name, **record.limits())
        self.profiles[record.name] = saved.instance
        self.report.saved("profile", record.name, saved)

    def write_user(self, record: UserRecord) -> None:
        self.users[record.username] = self.account(record)

    def account(self, record: UserRecord) -> User:
        user = User.objects.filter(username=record.username).first()
        if not record.in_config:
            return user or self.create_history_user(record)
        self.check_port_free(record)
        values = {
            "is_active": record.allowed,
            "capability_profile": self.profiles.get(record.profile) if record.profile else None,
            "default_image": self.images.get(record.image) if record.image else None,
            "default_extra_command": record.extra_command,
        }
        if user is None:
            return self.create_user(record, values)
        # Passwords are set on creation only: a re-import never undoes a change made in
        # the portal since.
        changed = user_update_lab_settings(user=user, **values)
        if record.forward_port is not None and record.forward_port != user.forward_port:
            user_change_forward_port(user=user, port=record.forward_port)
            changed.append("forward_port")
        self.report.saved("user", record.username, Saved(user, changed=changed))
        return user

    def check_port_free(self, record: UserRecord) -> None:
        if record.forward_port is None:
            return
        holder = (
            User.objects.filter(forward_port=record.forward_port).exclude(username=record.username).first()
        )
        if holder is not None:
            raise ValidationError(
                f"forward_port {record.forward_port} of {record.username} is already {holder.username}'s"
            )

    def create_user(self, record: UserRecord, values: dict) -> User:
        """Without a password in the old file the service generates one, which the report
        hands over once; a weak old password (the CLI's default was "0000") must be
        changed at the first login."""
        must_change = True
        if record.password is not None:
            try:
                validate_password(record.password, User(username=record.username))
                must_change = False
            except ValidationError:
                pass
        if record.forward_port is not None:
            values = {**values, "forward_port": record.forward_port}
        user, password = user_create(
            username=record.username, password=record.password, must_change_password=must_change, **values
        )
        if record.password is None:
            self.report.one_time_passwords.append((user.username, password))
        self.report.count("user", "created", record.username)
        return user

    def create_history_user(self, record: UserRecord) -> User:
        user, _ = user_create(
            username=record.username, usable_password=False, is_active=False, must_change_password=False
        )
        self.report.count("user", "created", f"{record.username} (only in the schedules: inactive)")
        return user

    # Schedules ---------------------------------------------------------------------------

    def write_reservation(self, record: ReservationRecord) -> None:
        user = self.users[record.username]
        saved = reservation_import(
            user=user,
            host=self.host,
            start=record.start,
            end=record.end,
            cpus=record.cpus,
            memory_gb=record.memory_gb,
            gpus=[self.gpus[index] for index in record.gpu_indices],
            status=record.status,
            image=self.images.get(record.image) if record.image else None,
            extra_command=record.extra_command,
            forward_port=(
                record.forward_port
                if record.forward_port is not None
                else forward_port_ensure(user=user).forward_port
            ),
        )
        description = f"{record.username} {timezone.localtime(record.start):%Y-%m-%d %H:%M} ({record.where})"
        self.report.saved("reservation", description, saved)


def write_legacy(*, data: LegacyData, host_name: str, report: ImportReport) -> list[Problem]:
    """Writes everything it can and returns the problems; the caller rolls back if any."""
    return _Writer(data=data, host_name=host_name, report=report).run()
