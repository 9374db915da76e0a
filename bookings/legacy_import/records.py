"""What the old AIVC-Server-Booking files say, as plain frozen records: the parser's output
and the writer's input. No models, no database. `Problem` is one thing wrong (or worth
saying) about a file, with its line and field."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

HOST_DEPLOY = "host_deploy.yaml"
CAPABILITY_CONFIG = "capability_config.yaml"
USERS_CONFIG = "users_config.yaml"
CUSTOM_PROFILE_PREFIX = "legacy-"
# The statuses a schedule file's rows get (values of Reservation.Status).
ENDED, RUNNING, SCHEDULED = "ended", "running", "scheduled"
LIVE = (RUNNING, SCHEDULED)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the old files (`is_error`), or worth telling (a warning)."""

    file: str
    line: int | None
    message: str
    field: str = ""
    is_error: bool = True

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class HostRecord:
    """`max` of capability_config.yaml and the roots of host_deploy.yaml."""

    cpus: int
    ram_gb: int
    swap_gb: int
    gpus: int
    work_space_gb: int
    backup_space_gb: int
    work_root: str
    dataset_root: str
    backup_root: str


@dataclass(frozen=True)
class ImageRecord:
    """An image the files name. Listed in host_deploy.yaml: offered (active), the first
    one the default. Named only by a user or a schedule row: kept for the record,
    inactive, and an image already in the portal is left as it is."""

    reference: str
    listed: bool
    is_default: bool = False


@dataclass(frozen=True)
class ProfileRecord:
    """Per-user maxima; None: the default's value (on the default: the host maximum)."""

    name: str
    is_default: bool
    line: int | None = None  # in capability_config.yaml
    cpus: Decimal | None = None
    memory_gb: int | None = None
    gpus: int | None = None
    work_space_gb: int | None = None
    backup_space_gb: int | None = None

    def limits(self) -> dict[str, Decimal | int | None]:
        return {
            "cpus": self.cpus,
            "memory_gb": self.memory_gb,
            "gpus": self.gpus,
            "work_space_gb": self.work_space_gb,
            "backup_space_gb": self.backup_space_gb,
        }


@dataclass(frozen=True)
class UserRecord:
    """One account the files name. `in_config`: named by allow_userIDs, users_config.yaml
    or a custom capability; otherwise only by schedule rows (an inactive account that
    keeps its history). The plain password never shows in a repr, a log or a report."""

    username: str
    file: str
    line: int
    in_config: bool = True
    allowed: bool = False
    password: str | None = field(default=None, repr=False)
    forward_port: int | None = None
    image: str | None = None
    extra_command: str = ""
    profile: str | None = None


@dataclass(frozen=True)
class ReservationRecord:
    """One schedule row. `image` is resolved (null: the default image); `forward_port`
    None means the user's own port."""

    file: str
    line: int
    status: str
    username: str
    start: datetime
    end: datetime
    cpus: Decimal
    memory_gb: int
    gpu_indices: tuple[int, ...]
    forward_port: int | None
    image: str | None
    extra_command: str

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}"


@dataclass(frozen=True)
class LegacyData:
    host: HostRecord
    images: tuple[ImageRecord, ...]
    default_profile: ProfileRecord
    profiles: tuple[ProfileRecord, ...]
    users: tuple[UserRecord, ...]
    reservations: tuple[ReservationRecord, ...]


@dataclass(frozen=True)
class ParseResult:
    """The records when the files hold no error, and every problem found."""

    data: LegacyData | None
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(problem for problem in self.problems if problem.is_error)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(problem for problem in self.problems if not problem.is_error)
