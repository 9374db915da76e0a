"""Pure parsing of the old files into records (`records.py`). Nothing here touches the
database: every problem is collected with its file, line and field, and the records are
returned only when there is no error. The config files are read here; the schedules in
`schedules.py`."""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from bookings.legacy_import.reading import (
    Bad,
    Mapping,
    Problems,
    Sequence,
    account_id,
    cpus_number,
    empty_mapping,
    evaluate_expression,
    is_null,
    read_yaml,
    whole_number,
)
from bookings.legacy_import.records import (
    CAPABILITY_CONFIG,
    CUSTOM_PROFILE_PREFIX,
    HOST_DEPLOY,
    USERS_CONFIG,
    HostRecord,
    ImageRecord,
    LegacyData,
    ParseResult,
    ProfileRecord,
    ReservationRecord,
    UserRecord,
)
from bookings.legacy_import.schedules import parse_schedules
from containers.commands import command_problem

MAX_KEYWORD = "max"
ROOT_KEYS = ("volume_work_dir", "volume_dataset_dir", "volume_backup_dir")
MAX_NUMBER_KEYS = ("cpus", "ram", "swap_size", "gpus", "work_space", "backup_space")
# Old capability keys -> (profile field, the `max` key it resolves to).
PROFILE_KEYS = {
    "cpus": ("cpus", "cpus"),
    "memory": ("memory_gb", "memory"),
    "gpus": ("gpus", "gpus"),
    "work_space": ("work_space_gb", "work_space"),
    "backup_space": ("backup_space_gb", "backup_space"),
}
MAX_REFERENCE = 255


def parse_legacy(*, cfg_dir: Path, jobs_dir: Path) -> ParseResult:
    """Reads the old cfg/*.yaml and jobs/*.csv into records, collecting every problem."""
    problems = Problems()
    cfg_dir, jobs_dir = Path(cfg_dir), Path(jobs_dir)
    for folder, option in ((cfg_dir, "--cfg"), (jobs_dir, "--jobs")):
        if not folder.is_dir():
            problems.error(str(folder), None, f"the {option} folder does not exist")
    if problems.has_errors():
        return ParseResult(data=None, problems=problems.final())
    config = _parse_config(cfg_dir, problems)
    reservations = parse_schedules(
        jobs_dir,
        problems,
        gpus=config.host.gpus if config.host else None,
        default_image=config.images[0] if config.images else None,
    )
    users = _with_schedule_only_users(config.users, reservations, problems)
    images = _image_records(config.images, users.values(), reservations)
    data = None
    if not problems.has_errors():
        data = LegacyData(
            host=config.host,
            images=images,
            default_profile=config.default_profile,
            profiles=tuple(config.profiles),
            users=tuple(users.values()),
            reservations=tuple(reservations),
        )
    return ParseResult(data=data, problems=problems.final())


@dataclass
class _Config:
    host: HostRecord | None
    images: list[str]
    default_profile: ProfileRecord | None
    profiles: list[ProfileRecord]
    users: dict[str, UserRecord]


def _parse_config(cfg_dir: Path, problems: Problems) -> _Config:
    deploy = read_yaml(cfg_dir / HOST_DEPLOY, problems)
    capability = read_yaml(cfg_dir / CAPABILITY_CONFIG, problems)
    users = read_yaml(cfg_dir / USERS_CONFIG, problems, required=False)
    maxima = _parse_maxima(capability, problems) if capability is not None else {}
    host = _parse_host(deploy, maxima, problems) if deploy is not None else None
    images = _parse_images(deploy, problems) if deploy is not None else []
    default_profile = None
    if capability is not None:
        section = _section(capability, "max_default_capability", problems)
        if section is not None:
            default_profile = _profile(section, "default", maxima=maxima, is_default=True, problems=problems)
    drafts = _parse_users(users or empty_mapping(), capability or empty_mapping(), maxima, problems)
    profiles = [draft.profile for draft in drafts.values() if draft.profile is not None]
    return _Config(
        host=host,
        images=images,
        default_profile=default_profile,
        profiles=profiles,
        users={name: draft.record() for name, draft in drafts.items()},
    )


def _section(data: Mapping, key: str, problems: Problems, *, file: str = CAPABILITY_CONFIG) -> Mapping | None:
    value = data.get(key)
    if isinstance(value, Mapping):
        return value
    reason = f"'{key}' is missing" if key not in data else f"'{key}' must be a mapping"
    problems.error(file, data.line_of(key), reason, field=key)
    return None


# The host ----------------------------------------------------------------------------------


def _parse_maxima(capability: Mapping, problems: Problems) -> dict[str, int | None]:
    """`max` of capability_config.yaml: the host totals, plus `memory` (ram + swap by
    default). A value that cannot be read is recorded and left None."""
    maximum = _section(capability, "max", problems)
    if maximum is None:
        return {}
    numbers: dict[str, int | None] = {}
    for key in MAX_NUMBER_KEYS:
        if key not in maximum:
            problems.error(CAPABILITY_CONFIG, maximum.line, f"'max.{key}' is missing", field=f"max.{key}")
            numbers[key] = None
            continue
        line = maximum.line_of(key)
        numbers[key] = problems.check(
            CAPABILITY_CONFIG, line, whole_number, maximum[key], what=f"max.{key}", field=f"max.{key}"
        )
    if all(value is not None for value in numbers.values()):
        numbers["memory"] = _derived(maximum, numbers, problems)
    return numbers


def _derived(maximum: Mapping, numbers: dict, problems: Problems) -> int | None:
    derived = {}
    for key, default in (("memory", "ram + swap_size"), ("shm_rate", "ram / (ram + swap_size)")):
        try:
            derived[key] = evaluate_expression(maximum.get(key, default), numbers)
        except ValueError as error:
            problems.error(CAPABILITY_CONFIG, maximum.line_of(key), f"max.{key}: {error}", field=f"max.{key}")
            return None
    memory = int(derived["memory"])
    if memory != numbers["ram"] + numbers["swap_size"]:
        problems.warning(
            CAPABILITY_CONFIG,
            maximum.line_of("memory"),
            f"max.memory is {memory} GB but ram + swap_size is {numbers['ram'] + numbers['swap_size']} GB; "
            "the portal books memory against ram + swap.",
        )
    return memory


def _parse_host(deploy: Mapping, maxima: dict, problems: Problems) -> HostRecord | None:
    roots = {}
    for key in ROOT_KEYS:
        value = deploy.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.error(HOST_DEPLOY, deploy.line_of(key), f"'{key}' must be a path", field=key)
            continue
        roots[key] = value.strip()
    if len(roots) < len(ROOT_KEYS) or any(maxima.get(key) is None for key in MAX_NUMBER_KEYS):
        return None
    return HostRecord(
        cpus=maxima["cpus"],
        ram_gb=maxima["ram"],
        swap_gb=maxima["swap_size"],
        gpus=maxima["gpus"],
        work_space_gb=maxima["work_space"],
        backup_space_gb=maxima["backup_space"],
        work_root=roots["volume_work_dir"],
        dataset_root=roots["volume_dataset_dir"],
        backup_root=roots["volume_backup_dir"],
    )


def _parse_images(deploy: Mapping, problems: Problems) -> list[str]:
    """The whitelist, in order (the first is the default)."""
    images = deploy.get("images")
    if not isinstance(images, Sequence) or not images:
        problems.error(
            HOST_DEPLOY, deploy.line_of("images"), "'images' must be a non-empty list", field="images"
        )
        return []
    references = []
    for position, reference in enumerate(images):
        if not isinstance(reference, str) or not reference.strip() or len(reference) > MAX_REFERENCE:
            problems.error(HOST_DEPLOY, images.lines[position], f"bad image reference {reference!r:.80}")
        elif reference.strip() not in references:
            references.append(reference.strip())
    return references


# Capability profiles ----------------------------------------------------------------------


def _profile(
    section: Mapping, name: str, *, maxima: dict, is_default: bool, problems: Problems
) -> ProfileRecord:
    """Old capability keys -> a profile. `max` is the host maximum: null on the default
    profile (which means exactly that), the host's number on a custom one (where null
    would inherit the default). A missing key is null: the default's value, or on the
    default the host maximum."""
    what = "max_default_capability" if is_default else f"max_custom_capability.{name}"
    values: dict[str, Decimal | int | None] = {}
    for key, (profile_field, max_key) in PROFILE_KEYS.items():
        values[profile_field] = _limit(
            section, key, max_key, maxima=maxima, is_default=is_default, what=what, problems=problems
        )
    for key in sorted(set(section) - set(PROFILE_KEYS), key=str):
        problems.error(
            CAPABILITY_CONFIG, section.line_of(key), f"unknown key '{what}.{key}'", field=f"{what}.{key}"
        )
    profile_name = "default" if is_default else f"{CUSTOM_PROFILE_PREFIX}{name}"
    return ProfileRecord(name=profile_name, is_default=is_default, line=section.line or None, **values)


def _limit(
    section: Mapping, key: str, max_key: str, *, maxima: dict, is_default: bool, what: str, problems: Problems
) -> Decimal | int | None:
    value, line = section.get(key), section.line_of(key)
    if key not in section or is_null(value):
        return None
    if isinstance(value, str) and value.strip().lower() == MAX_KEYWORD:
        return None if is_default else maxima.get(max_key)
    convert = cpus_number if key == "cpus" else whole_number
    return problems.check(
        CAPABILITY_CONFIG, line, convert, value, what=f"{what}.{key}", field=f"{what}.{key}"
    )


# Accounts ------------------------------------------------------------------------------------


@dataclass
class _UserDraft:
    """An account while the three places that name it are read."""

    username: str
    file: str
    line: int
    allowed: bool = False
    password: str | None = None
    forward_port: int | None = None
    image: str | None = None
    extra_command: str = ""
    profile: ProfileRecord | None = None
    entry_line: int | None = None

    def record(self) -> UserRecord:
        return UserRecord(
            username=self.username,
            file=self.file,
            line=self.line,
            allowed=self.allowed,
            password=self.password,
            forward_port=self.forward_port,
            image=self.image,
            extra_command=self.extra_command,
            profile=self.profile.name if self.profile else None,
        )


def _parse_users(
    users: Mapping, capability: Mapping, maxima: dict, problems: Problems
) -> dict[str, _UserDraft]:
    """Everyone the config files name: allowed ids, users_config entries and custom
    capabilities, merged by account id; forward ports must not repeat."""
    drafts: dict[str, _UserDraft] = {}
    _read_allowed(capability, drafts, problems)
    _read_user_entries(users, drafts, problems)
    _read_custom_capabilities(capability, maxima, drafts, problems)
    _check_ports_unique(drafts.values(), problems)
    return drafts


def _draft(drafts: dict[str, _UserDraft], username: str, *, file: str, line: int) -> _UserDraft:
    return drafts.setdefault(username, _UserDraft(username=username, file=file, line=line))


def _read_allowed(capability: Mapping, drafts: dict[str, _UserDraft], problems: Problems) -> None:
    allowed = capability.get("allow_userIDs")
    if allowed is not None and not isinstance(allowed, Sequence):
        line = capability.line_of("allow_userIDs")
        problems.error(CAPABILITY_CONFIG, line, "'allow_userIDs' must be a list", field="allow_userIDs")
        return
    for position, user_id in enumerate(allowed or []):
        if is_null(user_id):
            continue  # the template's empty `- #<user id>` entry
        line = allowed.lines[position]
        username = problems.check(CAPABILITY_CONFIG, line, account_id, user_id, field="allow_userIDs")
        if username is not None:
            _draft(drafts, username, file=CAPABILITY_CONFIG, line=line).allowed = True


def _read_user_entries(users: Mapping, drafts: dict[str, _UserDraft], problems: Problems) -> None:
    for user_id, entry in users.items():
        line = users.line_of(user_id)
        username = problems.check(USERS_CONFIG, line, account_id, user_id)
        if username is None:
            continue
        if not isinstance(entry, Mapping):
            problems.error(USERS_CONFIG, line, f"the entry of {username} must be a mapping")
            continue
        draft = _draft(drafts, username, file=USERS_CONFIG, line=line)
        if draft.entry_line is not None:
            problems.error(
                USERS_CONFIG, line, f"{username} has a second entry (the first is on line {draft.entry_line})"
            )
            continue
        draft.file, draft.line, draft.entry_line = USERS_CONFIG, line, line
        _read_user_entry(entry, draft, problems)


def _read_user_entry(entry: Mapping, draft: _UserDraft, problems: Problems) -> None:
    username = draft.username
    draft.password = problems.check(
        USERS_CONFIG, entry.line_of("password"), _password, entry, username=username, field="password"
    )
    draft.forward_port = problems.check(
        USERS_CONFIG,
        entry.line_of("forward_port"),
        _forward_port,
        entry,
        username=username,
        field="forward_port",
    )
    if not is_null(entry.get("image")):
        draft.image = str(entry["image"]).strip()
        if len(draft.image) > MAX_REFERENCE:
            problems.error(
                USERS_CONFIG,
                entry.line_of("image"),
                f"the image of {username} is longer than {MAX_REFERENCE} characters",
                field="image",
            )
    if not is_null(entry.get("extra_command")):
        draft.extra_command = str(entry["extra_command"]).strip()
        problem = command_problem(draft.extra_command)
        if problem:
            problems.error(
                USERS_CONFIG,
                entry.line_of("extra_command"),
                f"extra_command of {username} cannot be read as arguments ({problem})",
                field="extra_command",
            )


def _password(entry: Mapping, *, username: str) -> str | None:
    """The plain password exactly as written, or None when there is none. YAML reads an
    unquoted `0000` as the number 0 and `yes` as true; turning those back into text gives
    "0" or "True", which is not the user's password, so anything but text is refused.
    The value itself is never shown: it is a password."""
    password = entry.get("password")
    if password is None or password == "":
        return None
    if not isinstance(password, str):
        raise Bad(
            f"the password of {username} is not text (YAML reads it as {_yaml_kind(password)}); "
            'put it in quotes: password: "..."'
        )
    return password


def _yaml_kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _forward_port(entry: Mapping, *, username: str) -> int | None:
    if is_null(entry.get("forward_port")):
        return None
    port = whole_number(entry["forward_port"], what="forward_port")
    if port not in settings.PORT_RANGE:
        first, last = settings.PORT_RANGE.start, settings.PORT_RANGE.stop - 1
        raise Bad(f"forward_port {port} of {username} is outside PORT_RANGE {first}-{last}")
    return port


def _read_custom_capabilities(
    capability: Mapping, maxima: dict, drafts: dict[str, _UserDraft], problems: Problems
) -> None:
    custom = capability.get("max_custom_capability")
    if custom is not None and not isinstance(custom, Mapping):
        line = capability.line_of("max_custom_capability")
        problems.error(CAPABILITY_CONFIG, line, "'max_custom_capability' must be a mapping")
        return
    for user_id, section in (custom or {}).items():
        line = custom.line_of(user_id)
        username = problems.check(CAPABILITY_CONFIG, line, account_id, user_id)
        if username is None:
            continue
        section = empty_mapping() if section is None else section
        if not isinstance(section, Mapping):
            problems.error(CAPABILITY_CONFIG, line, f"the capability of {username} must be a mapping")
            continue
        profile = _profile(section, username, maxima=maxima, is_default=False, problems=problems)
        _draft(drafts, username, file=CAPABILITY_CONFIG, line=line).profile = profile


def _check_ports_unique(drafts: Iterable[_UserDraft], problems: Problems) -> None:
    ports: dict[int, str] = {}
    for draft in drafts:
        if draft.forward_port is None:
            continue
        if draft.forward_port in ports:
            problems.error(
                USERS_CONFIG,
                draft.line,
                f"forward_port {draft.forward_port} of {draft.username} "
                f"is also {ports[draft.forward_port]}'s",
                field="forward_port",
            )
            continue
        ports[draft.forward_port] = draft.username


# What the schedules add ------------------------------------------------------------------


def _with_schedule_only_users(
    users: dict[str, UserRecord], reservations: list[ReservationRecord], problems: Problems
) -> dict[str, UserRecord]:
    """An account named only in the schedules keeps its history: an inactive account that
    cannot log in (it was not in allow_userIDs and has no password)."""
    users = dict(users)
    for row in reservations:
        if row.username in users:
            continue
        users[row.username] = UserRecord(username=row.username, file=row.file, line=row.line, in_config=False)
        problems.warning(
            row.file,
            row.line,
            f"{row.username} is in no config file; imported as an inactive account that cannot log in",
        )
    return users


def _image_records(
    listed: list[str], users: Iterable[UserRecord], reservations: list[ReservationRecord]
) -> tuple[ImageRecord, ...]:
    """The whitelist (first: the default), then images named only by a user or a row."""
    records = {reference: ImageRecord(reference, listed=True) for reference in listed}
    if listed:
        records[listed[0]] = replace(records[listed[0]], is_default=True)
    named = [user.image for user in users] + [row.image for row in reservations]
    for reference in named:
        if reference is not None and reference not in records:
            records[reference] = ImageRecord(reference, listed=False)
    return tuple(records.values())
