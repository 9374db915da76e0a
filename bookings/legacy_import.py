"""Moves the old AIVC-Server-Booking files (cfg/*.yaml, jobs/*.csv) into the portal.

One transaction: the first bad file or row raises `LegacyImportError` naming the file, the
line and the reason, and nothing is saved. Rows are matched on natural keys (host name,
image reference, profile name, account id, reservation user + host + start), so a second
run over the same files changes nothing. Plain passwords from users_config.yaml are
hashed with `set_password` and never appear in a message, a report or a log. Ended rows
(used.csv) keep their GPUs as inactive allocations, so history the old checker
double-booked still imports; running and scheduled rows must not clash.
"""

import ast
import csv
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from accounts.models import CapabilityProfile, User
from accounts.services import generate_password, normalise_username
from bookings.capacity import gpus_free, own_bookings_overlapping
from bookings.models import GpuAllocation, Reservation
from containers.commands import command_problem
from containers.models import Gpu, Host, Image

HOST_DEPLOY = "host_deploy.yaml"
CAPABILITY_CONFIG = "capability_config.yaml"
USERS_CONFIG = "users_config.yaml"
# Old file name -> the status its rows get. The CLI's docs call the running file both
# `using.csv` and `use.csv`; the first one found is read.
SCHEDULE_FILES = (
    (("used.csv",), Reservation.Status.ENDED),
    (("using.csv", "use.csv"), Reservation.Status.RUNNING),
    (("booking.csv",), Reservation.Status.SCHEDULED),
)
CSV_COLUMNS = ("start", "end", "user_id", "cpus", "memory", "gpus", "forward_port", "image", "extra_command")
MAX_KEYWORD = "max"
CUSTOM_PROFILE_PREFIX = "legacy-"
# Old keys -> CapabilityProfile fields, and the `max` block key each resolves to.
PROFILE_KEYS = {
    "cpus": ("cpus", "cpus"),
    "memory": ("memory_gb", "memory"),
    "gpus": ("gpus", "gpus"),
    "work_space": ("work_space_gb", "work_space"),
    "backup_space": ("backup_space_gb", "backup_space"),
}


class LegacyImportError(Exception):
    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file, self.line, self.reason = file, line, reason
        where = f"{file}, line {line}" if line else file
        super().__init__(f"{where}: {reason}")


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

    @property
    def changed(self) -> bool:
        return bool(self.changes)


class _DryRunRollback(Exception):
    pass


# YAML with line numbers ----------------------------------------------------------------


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0
    lines: dict

    def line_of(self, key: object) -> int:
        return self.lines.get(key, self.line)


class _Sequence(list):
    line: int = 0
    lines: list


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Iterator[_Mapping]:
    mapping = _Mapping()
    mapping.line, mapping.lines = node.start_mark.line + 1, {}
    yield mapping
    mapping.update(loader.construct_mapping(node, deep=True))
    for key_node, _ in node.value:
        mapping.lines[loader.construct_object(key_node, deep=True)] = key_node.start_mark.line + 1


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> Iterator[_Sequence]:
    sequence = _Sequence()
    sequence.line = node.start_mark.line + 1
    sequence.lines = [item.start_mark.line + 1 for item in node.value]
    yield sequence
    sequence.extend(loader.construct_sequence(node, deep=True))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _read_yaml(path: Path, *, required: bool = True) -> _Mapping:
    if not path.is_file():
        if required:
            raise LegacyImportError(path.name, None, f"file not found in {path.parent}")
        return _empty_mapping()
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_LineLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise LegacyImportError(
            path.name, mark.line + 1 if mark else None, f"not valid YAML ({problem})"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise LegacyImportError(path.name, None, f"cannot be read ({error})") from None
    if data is None:
        return _empty_mapping()
    if not isinstance(data, _Mapping):
        raise LegacyImportError(path.name, 1, "expected a mapping of keys to values at the top level")
    return data


def _empty_mapping() -> _Mapping:
    mapping = _Mapping()
    mapping.lines = {}
    return mapping


def _section(data: _Mapping, key: str, *, file: str, required: bool = True) -> _Mapping:
    value = data.get(key)
    if value is None and not required:
        return _empty_mapping()
    if not isinstance(value, _Mapping):
        reason = f"'{key}' is missing" if key not in data else f"'{key}' must be a mapping"
        raise LegacyImportError(file, data.line_of(key), reason)
    return value


# Safe arithmetic for `shm_rate: ram / (ram + swap_size)` ---------------------------------

_OPERATORS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate_expression(expression: object, names: dict[str, float]) -> float:
    """Evaluates numbers, names from `names`, + - * / and brackets; anything else (calls,
    attributes, other operators) is refused. Never `eval`."""
    if isinstance(expression, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(expression, int | float):
        return float(expression)
    try:
        tree = ast.parse(str(expression).strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"'{expression}' is not an arithmetic expression") from None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"unknown name '{node.id}' (known: {', '.join(sorted(names))})")
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.operand))
        raise ValueError(f"'{expression}' uses something other than numbers, names and + - * /")

    return walk(tree)


# Parsed configuration --------------------------------------------------------------------


@dataclass
class _HostConfig:
    work_root: str
    dataset_root: str
    backup_root: str
    images: list[str]
    cpus: int
    ram_gb: int
    swap_gb: int
    gpus: int
    work_space_gb: int
    backup_space_gb: int
    memory_gb: int


@dataclass
class _UserConfig:
    username: str
    line: int
    password: str | None = None
    forward_port: int | None = None
    image: str | None = None
    extra_command: str = ""
    allowed: bool = False
    profile_values: dict | None = None


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none"))


def _whole_number(value: object, *, file: str, line: int, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise LegacyImportError(file, line, f"{what} must be a whole number, not {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise LegacyImportError(file, line, f"{what} must be a whole number, not {value!r}") from None
    if not number.is_finite() or number != number.to_integral_value() or number < minimum:
        raise LegacyImportError(file, line, f"{what} must be a whole number >= {minimum}, not {value!r}")
    return int(number)


def _cpus_number(value: object, *, file: str, line: int, what: str = "cpus") -> Decimal:
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, bool) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number <= 0 or number != number.quantize(Decimal("0.01")):
        raise LegacyImportError(
            file, line, f"{what} must be a number above 0 with at most 2 decimals, not {value!r}"
        )
    return number


def _parse_host(deploy: _Mapping, capability: _Mapping) -> _HostConfig:
    images = deploy.get("images")
    if not isinstance(images, _Sequence) or not images:
        raise LegacyImportError(HOST_DEPLOY, deploy.line_of("images"), "'images' must be a non-empty list")
    for position, reference in enumerate(images):
        if not isinstance(reference, str) or not reference.strip() or len(reference) > 255:
            raise LegacyImportError(HOST_DEPLOY, images.lines[position], f"bad image reference {reference!r}")
    roots = {}
    for key in ("volume_work_dir", "volume_dataset_dir", "volume_backup_dir"):
        value = deploy.get(key)
        if not isinstance(value, str) or not value.strip():
            raise LegacyImportError(HOST_DEPLOY, deploy.line_of(key), f"'{key}' must be a path")
        roots[key] = value.strip()

    maximum = _section(capability, "max", file=CAPABILITY_CONFIG)
    numbers = {}
    for key in ("cpus", "ram", "swap_size", "gpus", "work_space", "backup_space"):
        if key not in maximum:
            raise LegacyImportError(CAPABILITY_CONFIG, maximum.line, f"'max.{key}' is missing")
        numbers[key] = _whole_number(
            maximum[key], file=CAPABILITY_CONFIG, line=maximum.line_of(key), what=f"max.{key}"
        )
    derived = {}
    for key, default in (("memory", "ram + swap_size"), ("shm_rate", "ram / (ram + swap_size)")):
        try:
            derived[key] = evaluate_expression(maximum.get(key, default), numbers)
        except ValueError as error:
            raise LegacyImportError(CAPABILITY_CONFIG, maximum.line_of(key), f"max.{key}: {error}") from None
    return _HostConfig(
        work_root=roots["volume_work_dir"],
        dataset_root=roots["volume_dataset_dir"],
        backup_root=roots["volume_backup_dir"],
        images=[reference.strip() for reference in images],
        cpus=numbers["cpus"],
        ram_gb=numbers["ram"],
        swap_gb=numbers["swap_size"],
        gpus=numbers["gpus"],
        work_space_gb=numbers["work_space"],
        backup_space_gb=numbers["backup_space"],
        memory_gb=int(derived["memory"]),
    )


def _username(value: object, *, file: str, line: int) -> str:
    try:
        return normalise_username(str(value))
    except ValidationError as error:
        raise LegacyImportError(
            file, line, f"bad account id {value!r} ({' '.join(error.messages)})"
        ) from None


def _profile_values(
    section: _Mapping, *, host: _HostConfig, is_default: bool, what: str
) -> dict[str, Decimal | int | None]:
    """Old capability keys -> profile fields. `max` is the host maximum: null on the default
    profile (which means exactly that), the host's number on a custom one (where null
    would inherit the default). A missing key is null: the default's value, or on the
    default the host maximum."""
    values: dict[str, Decimal | int | None] = {}
    for key, (profile_field, max_key) in PROFILE_KEYS.items():
        value, line = section.get(key), section.line_of(key)
        if key not in section or _is_null(value):
            values[profile_field] = None
        elif isinstance(value, str) and value.strip().lower() == MAX_KEYWORD:
            values[profile_field] = None if is_default else getattr(host, _HOST_MAX_ATTRIBUTES[max_key])
        elif profile_field == "cpus":
            values[profile_field] = _cpus_number(
                value, file=CAPABILITY_CONFIG, line=line, what=f"{what}.{key}"
            )
        else:
            values[profile_field] = _whole_number(
                value, file=CAPABILITY_CONFIG, line=line, what=f"{what}.{key}"
            )
    unknown = set(section) - set(PROFILE_KEYS)
    if unknown:
        key = sorted(unknown, key=str)[0]
        raise LegacyImportError(CAPABILITY_CONFIG, section.line_of(key), f"unknown key '{what}.{key}'")
    if values["cpus"] is not None:
        values["cpus"] = Decimal(values["cpus"]).quantize(Decimal("0.01"))
    return values


_HOST_MAX_ATTRIBUTES = {
    "cpus": "cpus",
    "memory": "memory_gb",
    "gpus": "gpus",
    "work_space": "work_space_gb",
    "backup_space": "backup_space_gb",
}


def _password(entry: _Mapping, *, username: str) -> str | None:
    """The plain password exactly as written, or None when there is none. YAML reads an
    unquoted `0000` as the number 0 and `yes` as true; turning those back into text gives
    "0" or "True", which is not the user's password, so anything but text is refused."""
    password = entry.get("password")
    if password is None or password == "":
        return None
    if not isinstance(password, str):
        # The value itself is never shown: it is a password.
        raise LegacyImportError(
            USERS_CONFIG,
            entry.line_of("password"),
            f"the password of {username} is not text (YAML reads it as {_yaml_kind(password)}); "
            'put it in quotes: password: "..."',
        )
    return password


def _yaml_kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _parse_users(users: _Mapping, capability: _Mapping, *, host: _HostConfig) -> dict[str, _UserConfig]:
    parsed: dict[str, _UserConfig] = {}
    allowed = capability.get("allow_userIDs")
    if allowed is not None and not isinstance(allowed, _Sequence):
        raise LegacyImportError(
            CAPABILITY_CONFIG, capability.line_of("allow_userIDs"), "'allow_userIDs' must be a list"
        )
    for position, user_id in enumerate(allowed or []):
        if _is_null(user_id):
            continue  # the template's empty `- #<user id>` entry
        username = _username(user_id, file=CAPABILITY_CONFIG, line=allowed.lines[position])
        parsed.setdefault(
            username, _UserConfig(username=username, line=allowed.lines[position])
        ).allowed = True

    for user_id, entry in users.items():
        line = users.line_of(user_id)
        username = _username(user_id, file=USERS_CONFIG, line=line)
        if not isinstance(entry, _Mapping):
            raise LegacyImportError(USERS_CONFIG, line, f"the entry of {username} must be a mapping")
        config = parsed.setdefault(username, _UserConfig(username=username, line=line))
        config.line = line
        config.password = _password(entry, username=username)
        if not _is_null(entry.get("forward_port")):
            config.forward_port = _whole_number(
                entry["forward_port"],
                file=USERS_CONFIG,
                line=entry.line_of("forward_port"),
                what="forward_port",
            )
            if config.forward_port not in settings.PORT_RANGE:
                raise LegacyImportError(
                    USERS_CONFIG,
                    entry.line_of("forward_port"),
                    f"forward_port {config.forward_port} of {username} is outside PORT_RANGE "
                    f"{settings.PORT_RANGE.start}-{settings.PORT_RANGE.stop - 1}",
                )
        if not _is_null(entry.get("image")):
            config.image = str(entry["image"]).strip()
        if not _is_null(entry.get("extra_command")):
            config.extra_command = str(entry["extra_command"]).strip()
            problem = command_problem(config.extra_command)
            if problem:
                raise LegacyImportError(
                    USERS_CONFIG,
                    entry.line_of("extra_command"),
                    f"extra_command of {username} cannot be read as arguments ({problem})",
                )

    custom = capability.get("max_custom_capability")
    if custom is not None and not isinstance(custom, _Mapping):
        raise LegacyImportError(
            CAPABILITY_CONFIG,
            capability.line_of("max_custom_capability"),
            "'max_custom_capability' must be a mapping",
        )
    for user_id, section in (custom or {}).items():
        line = custom.line_of(user_id)
        username = _username(user_id, file=CAPABILITY_CONFIG, line=line)
        if section is None:
            section = _empty_mapping()
        if not isinstance(section, _Mapping):
            raise LegacyImportError(
                CAPABILITY_CONFIG, line, f"the capability of {username} must be a mapping"
            )
        config = parsed.setdefault(username, _UserConfig(username=username, line=line))
        config.profile_values = _profile_values(
            section, host=host, is_default=False, what=f"max_custom_capability.{username}"
        )

    ports: dict[int, str] = {}
    for config in parsed.values():
        if config.forward_port is None:
            continue
        if config.forward_port in ports:
            raise LegacyImportError(
                USERS_CONFIG,
                config.line,
                f"forward_port {config.forward_port} of {config.username} "
                f"is also {ports[config.forward_port]}'s",
            )
        ports[config.forward_port] = config.username
    return parsed


# Writing ---------------------------------------------------------------------------------


def _sync(
    report: ImportReport,
    kind: str,
    description: str,
    instance: models.Model | None,
    factory: Callable[[], models.Model],
    values: dict,
) -> tuple[models.Model, str]:
    """Creates `factory()` with `values` when `instance` is None, otherwise writes only
    the fields whose value differs. Counts what happened."""
    if instance is None:
        instance = factory()
        for name, value in values.items():
            setattr(instance, name, value)
        instance.save()
        report.count(kind, "created", description)
        return instance, "created"
    changed = [name for name, value in values.items() if getattr(instance, name) != value]
    if not changed:
        report.count(kind, "unchanged", description)
        return instance, "unchanged"
    for name in changed:
        setattr(instance, name, values[name])
    instance.save(update_fields=changed)
    report.count(kind, "updated", f"{description} ({', '.join(changed)})")
    return instance, "updated"


class _Importer:
    def __init__(self, *, cfg_dir: Path, jobs_dir: Path, host_name: str, report: ImportReport) -> None:
        self.cfg_dir, self.jobs_dir, self.host_name, self.report = cfg_dir, jobs_dir, host_name, report
        self.images: dict[str, Image] = {}
        self.users: dict[str, User] = {}
        self.gpus: dict[int, Gpu] = {}
        self.seen_rows: dict[tuple, str] = {}

    def run(self) -> None:
        if not self.cfg_dir.is_dir():
            raise LegacyImportError(str(self.cfg_dir), None, "the --cfg folder does not exist")
        if not self.jobs_dir.is_dir():
            raise LegacyImportError(str(self.jobs_dir), None, "the --jobs folder does not exist")
        deploy = _read_yaml(self.cfg_dir / HOST_DEPLOY)
        capability = _read_yaml(self.cfg_dir / CAPABILITY_CONFIG)
        users = _read_yaml(self.cfg_dir / USERS_CONFIG, required=False)
        host_config = _parse_host(deploy, capability)
        default_values = _profile_values(
            _section(capability, "max_default_capability", file=CAPABILITY_CONFIG),
            host=host_config,
            is_default=True,
            what="max_default_capability",
        )
        user_configs = _parse_users(users, capability, host=host_config)

        self.host = self._import_host(host_config)
        self._import_images(host_config.images)
        self._import_default_profile(default_values)
        # Accounts with a port from the file first, so a free port handed to an account
        # without one can never be a port another account's entry claims.
        for config in sorted(user_configs.values(), key=lambda config: config.forward_port is None):
            self._import_user(config)
        for names, status in SCHEDULE_FILES:
            path = next((self.jobs_dir / name for name in names if (self.jobs_dir / name).is_file()), None)
            if path is None:
                self.report.notes.append(f"{' / '.join(names)}: not found in {self.jobs_dir}, skipped.")
                continue
            self._import_schedule(path, status)

    # Inventory --------------------------------------------------------------------------

    def _import_host(self, config: _HostConfig) -> Host:
        if config.memory_gb != config.ram_gb + config.swap_gb:
            self.report.notes.append(
                f"{CAPABILITY_CONFIG}: max.memory is {config.memory_gb} GB but ram + swap_size is "
                f"{config.ram_gb + config.swap_gb} GB; the portal books memory against ram + swap."
            )
        host, _ = _sync(
            self.report,
            "host",
            self.host_name,
            Host.objects.filter(name=self.host_name).first(),
            lambda: Host(name=self.host_name),
            {
                "cpus": config.cpus,
                "ram_gb": config.ram_gb,
                "swap_gb": config.swap_gb,
                "max_work_space_gb": config.work_space_gb,
                "max_backup_space_gb": config.backup_space_gb,
                "work_root": config.work_root,
                "dataset_root": config.dataset_root,
                "backup_root": config.backup_root,
            },
        )
        existing = {gpu.index: gpu for gpu in host.gpus.all()}
        for index in range(config.gpus):
            gpu = existing.get(index)
            if gpu is None:
                gpu = Gpu.objects.create(host=host, index=index)
                self.report.count("gpu", "created", f"{host.name} GPU {index}")
            else:
                self.report.count("gpu", "unchanged", f"{host.name} GPU {index}")
            self.gpus[index] = gpu
        for index, gpu in existing.items():
            self.gpus.setdefault(index, gpu)
        return host

    def _import_images(self, references: list[str]) -> None:
        default_reference = references[0]
        self.default_image: Image | None = None
        current_default = Image.objects.filter(is_default=True).exclude(reference=default_reference).first()
        if current_default is not None:
            # Only one image may be the default: step the old one down first.
            _sync(
                self.report, "image", current_default.reference, current_default, Image, {"is_default": False}
            )
        for reference in references:
            self.images[reference], _ = _sync(
                self.report,
                "image",
                reference,
                Image.objects.filter(reference=reference).first(),
                lambda reference=reference: Image(reference=reference),
                {"is_default": reference == default_reference, "is_active": True},
            )
        self.default_image = self.images[default_reference]

    def _image(self, reference: str | None, *, file: str, line: int) -> Image | None:
        """An image named outside the whitelist (old history can hold one) is kept, inactive."""
        if reference is None:
            return None
        if len(reference) > 255:
            raise LegacyImportError(file, line, "the image reference is longer than 255 characters")
        if reference not in self.images:
            image = Image.objects.filter(reference=reference).first()
            if image is None:
                image, _ = _sync(
                    self.report,
                    "image",
                    f"{reference} (not in host_deploy.yaml: inactive)",
                    None,
                    lambda: Image(reference=reference),
                    {"is_active": False},
                )
            self.images[reference] = image
        return self.images[reference]

    # Accounts ---------------------------------------------------------------------------

    def _import_default_profile(self, values: dict) -> None:
        default = CapabilityProfile.objects.filter(is_default=True).first()
        _sync(
            self.report,
            "profile",
            default.name if default else "default",
            default,
            lambda: CapabilityProfile(name="default", is_default=True),
            values,
        )

    def _import_user(self, config: _UserConfig) -> User:
        profile = None
        if config.profile_values is not None:
            name = f"{CUSTOM_PROFILE_PREFIX}{config.username}"
            profile, _ = _sync(
                self.report,
                "profile",
                name,
                CapabilityProfile.objects.filter(name=name).first(),
                lambda: CapabilityProfile(name=name),
                config.profile_values,
            )
        if config.forward_port is not None:
            holder = (
                User.objects.filter(forward_port=config.forward_port)
                .exclude(username=config.username)
                .first()
            )
            if holder is not None:
                raise LegacyImportError(
                    USERS_CONFIG,
                    config.line,
                    f"forward_port {config.forward_port} of {config.username} is already {holder.username}'s",
                )
        user = User.objects.filter(username=config.username).first()
        values = {
            "is_active": config.allowed,
            "capability_profile": profile,
            "default_image": self._image(config.image, file=USERS_CONFIG, line=config.line),
            "default_extra_command": config.extra_command,
        }
        if config.forward_port is not None:
            values["forward_port"] = config.forward_port
        elif user is not None and user.forward_port is not None:
            values["forward_port"] = user.forward_port
        new_password = None
        if user is None:
            # Passwords are set on creation only: a re-import never undoes a change made in
            # the portal since.
            new_password = config.password
        user, action = _sync(
            self.report, "user", config.username, user, lambda: User(username=config.username), values
        )
        if action == "created":
            self._set_first_password(user, new_password)
        self.users[config.username] = user
        return user

    def _set_first_password(self, user: User, password: str | None) -> None:
        if password is None:
            password = generate_password()
            self.report.one_time_passwords.append((user.username, password))
            must_change = True
        else:
            # A weak old password (the CLI's default was "0000") must be changed at login.
            try:
                validate_password(password, user)
                must_change = False
            except ValidationError:
                must_change = True
        user.set_password(password)
        user.must_change_password = must_change
        user.save(update_fields=["password", "must_change_password"])

    def _user_for_row(self, username: str) -> User:
        """An account named only in the schedules keeps its history; a new one cannot log in
        (not in allow_userIDs, no password)."""
        if username not in self.users:
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User(username=username, is_active=False)
                user.set_unusable_password()
                user.save()
                self.report.count("user", "created", f"{username} (only in the schedules: inactive)")
            self.users[username] = user
        return self.users[username]

    # Schedules --------------------------------------------------------------------------

    def _import_schedule(self, path: Path, status: str) -> None:
        file = path.name
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    return
                header = [column.strip() for column in header]
                missing = [column for column in CSV_COLUMNS if column not in header]
                if missing:
                    raise LegacyImportError(file, 1, f"missing column(s): {', '.join(missing)}")
                positions = {column: header.index(column) for column in CSV_COLUMNS}
                for row in reader:
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) != len(header):
                        raise LegacyImportError(
                            file, reader.line_num, f"expected {len(header)} cells, found {len(row)}"
                        )
                    cells = {column: row[position].strip() for column, position in positions.items()}
                    self._import_row(cells, status=status, file=file, line=reader.line_num)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise LegacyImportError(file, None, f"cannot be read ({error})") from None

    def _import_row(self, cells: dict[str, str], *, status: str, file: str, line: int) -> None:
        start = _datetime(cells["start"], file=file, line=line, what="start")
        end = _datetime(cells["end"], file=file, line=line, what="end")
        if end <= start:
            raise LegacyImportError(file, line, "end must be after start")
        username = _username(cells["user_id"], file=file, line=line)
        cpus = _cpus_number(cells["cpus"], file=file, line=line)
        memory_gb = _whole_number(cells["memory"], file=file, line=line, what="memory", minimum=1)
        gpu_indices = _gpu_list(cells["gpus"], file=file, line=line)
        unknown = [index for index in gpu_indices if index not in self.gpus]
        if unknown:
            raise LegacyImportError(
                file,
                line,
                f"GPU {unknown[0]} does not exist on {self.host.name} (max.gpus is {len(self.gpus)})",
            )
        key = (username, start)
        if key in self.seen_rows:
            raise LegacyImportError(file, line, f"the same reservation as {self.seen_rows[key]}")
        self.seen_rows[key] = f"{file} line {line}"

        user = self._user_for_row(username)
        forward_port = (
            user.forward_port
            if _is_null(cells["forward_port"])
            else _whole_number(cells["forward_port"], file=file, line=line, what="forward_port")
        )
        image_reference = None if _is_null(cells["image"]) else cells["image"]
        image = self._image(image_reference, file=file, line=line) or self.default_image
        extra_command = "" if _is_null(cells["extra_command"]) else cells["extra_command"]
        if len(extra_command) > 1000:
            raise LegacyImportError(file, line, "extra_command is longer than 1000 characters")
        problem = command_problem(extra_command)
        if problem:
            raise LegacyImportError(file, line, f"extra_command cannot be read as arguments ({problem})")
        values = {
            "end": end,
            "booked_end": end,
            "cpus": cpus,
            "memory_gb": memory_gb,
            "gpu_count": len(gpu_indices),
            "image": image,
            "extra_command": extra_command,
            "forward_port": forward_port,
            "status": status,
            "started_at": None if status == Reservation.Status.SCHEDULED else start,
            "ended_at": end if status == Reservation.Status.ENDED else None,
        }
        existing = Reservation.objects.filter(user=user, host=self.host, start=start).first()
        description = f"{username} {timezone.localtime(start):%Y-%m-%d %H:%M} ({file} line {line})"
        if status in Reservation.LIVE_STATUSES:
            clash = own_bookings_overlapping(
                user_id=user.pk,
                start=start,
                end=end,
                exclude_reservation_id=existing.pk if existing else None,
            ).first()
            if clash is not None:
                raise LegacyImportError(
                    file, line, f"{username} already holds an overlapping reservation ({clash})"
                )
        try:
            with transaction.atomic():
                reservation, action = _sync(
                    self.report,
                    "reservation",
                    description,
                    existing,
                    lambda: Reservation(user=user, host=self.host, start=start),
                    values,
                )
                self._allocate(reservation, gpu_indices, file=file, line=line, changed=action != "unchanged")
        except IntegrityError as error:
            raise LegacyImportError(
                file, line, f"the database refused the row ({error.__cause__ or error})"
            ) from None

    def _allocate(
        self, reservation: Reservation, indices: list[int], *, file: str, line: int, changed: bool
    ) -> None:
        """Ended rows keep their GPUs as inactive allocations: the old checker handed one GPU
        to two users for overlapping windows, and that history must still be importable.
        Running and scheduled rows hold their GPUs, and a clash there stops the import."""
        holds = reservation.is_live
        wanted = {(self.gpus[index].pk, reservation.start, reservation.end, holds) for index in indices}
        current = set(reservation.allocations.values_list("gpu_id", "start", "end", "active"))
        if wanted == current:
            return
        if holds:
            self._check_gpus_free(reservation, indices, file=file, line=line)
        reservation.allocations.all().delete()
        GpuAllocation.objects.bulk_create(
            GpuAllocation(reservation=reservation, gpu_id=gpu_id, start=start, end=end, active=active)
            for gpu_id, start, end, active in wanted
        )
        if not changed:
            self.report.count("reservation", "updated", f"#{reservation.pk} (GPU allocations)")

    def _check_gpus_free(self, reservation: Reservation, indices: list[int], *, file: str, line: int) -> None:
        """The exclusion constraint would refuse the clash too, but only on PostgreSQL and
        without saying which GPU: this names it."""
        for index in indices:
            if not gpus_free(
                gpu_ids=[self.gpus[index].pk],
                start=reservation.start,
                end=reservation.end,
                exclude_reservation_id=reservation.pk,
            ):
                raise LegacyImportError(
                    file,
                    line,
                    f"GPU {index} is already held by another running or scheduled reservation "
                    "for an overlapping time",
                )


def _datetime(text: str, *, file: str, line: int, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LegacyImportError(
            file, line, f"{what} {text!r} is not a date and time like 2023-01-01 13:30:00"
        ) from None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def _gpu_list(text: str, *, file: str, line: int) -> list[int]:
    """`"[0, 1]"` -> [0, 1]; `null`, empty or `[]` -> []. Read as a literal, never run."""
    if _is_null(text):
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise LegacyImportError(file, line, f"gpus {text!r} is not a list like [0, 1]") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not all(
        isinstance(index, int) and not isinstance(index, bool) and index >= 0 for index in value
    ):
        raise LegacyImportError(file, line, f"gpus {text!r} must be a list of GPU indices like [0, 1]")
    if len(set(value)) != len(value):
        raise LegacyImportError(file, line, f"gpus {text!r} names a GPU twice")
    return sorted(value)


def import_legacy(*, cfg_dir: Path, jobs_dir: Path, host_name: str, dry_run: bool = False) -> ImportReport:
    """Imports everything or nothing. In a dry run the work is done and rolled back, so the
    report says exactly what a real run would change."""
    report = ImportReport(dry_run=dry_run)
    importer = _Importer(cfg_dir=Path(cfg_dir), jobs_dir=Path(jobs_dir), host_name=host_name, report=report)
    try:
        with transaction.atomic():
            importer.run()
            if dry_run:
                raise _DryRunRollback
    except _DryRunRollback:
        report.one_time_passwords.clear()
    return report
