"""What a container runs with, and how the portal recognises its containers: the
`ContainerSpec` a reservation or job is launched from (resources, GPUs, mounts, labels,
the security fence) and the `ContainerState` an engine reports. Plain data, no engine:
the runtimes (`containers.runtime`, `containers.fake_runtime`) take a spec and return a
state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from math import ceil
from typing import TYPE_CHECKING

from django.conf import settings

from containers.commands import command_arguments
from containers.models import Host

if TYPE_CHECKING:
    from bookings.models import Reservation

GIB = 1024**3
LABEL_MANAGED = "aivc.managed"
LABEL_HOST = "aivc.host"  # the host's name, for people reading `docker ps`; may go stale
LABEL_HOST_ID = "aivc.host-id"  # the host's primary key: what the portal finds containers by
LABEL_RESERVATION = "aivc.reservation"
LABEL_USER = "aivc.user"
LABEL_JOB = "aivc.job"
# On images a DoPQ build made (the portal's scope): only those are ever removed by the portal.
LABEL_BUILT = "aivc.built"
# Read by the entrypoint of the lab images (deploy/images): ssh, job or lab. Set by the
# portal only, never by the student, and only for images marked `lab_modes`.
MODE_VARIABLE = "AIVC_MODE"
# What common libraries read for their thread pools (torch reads OMP's and MKL's; GNU
# `nproc` honours OMP_NUM_THREADS; Python 3.13 reads PYTHON_CPU_COUNT for os.cpu_count()).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "PYTHON_CPU_COUNT",
)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class SecurityOptions:
    """How far a container is fenced in (docs/security.md says why each part is there).
    Every part comes from a setting, so a lab that needs more can relax one of them."""

    cap_add: tuple[str, ...]
    no_new_privileges: bool
    pids_limit: int  # 0: no limit
    nofile: int
    nproc: int
    log_max_size: str
    log_max_files: int
    network: str  # "": Docker's default bridge, where containers reach each other

    @classmethod
    def from_settings(cls) -> SecurityOptions:
        return cls(
            cap_add=tuple(settings.CONTAINER_CAP_ADD),
            no_new_privileges=settings.CONTAINER_NO_NEW_PRIVILEGES,
            pids_limit=settings.CONTAINER_PIDS_LIMIT,
            nofile=settings.CONTAINER_NOFILE_LIMIT,
            nproc=settings.CONTAINER_NPROC_LIMIT,
            log_max_size=settings.CONTAINER_LOG_MAX_SIZE,
            log_max_files=settings.CONTAINER_LOG_MAX_FILES,
            network=settings.CONTAINER_NETWORK,
        )


@dataclass(frozen=True)
class ContainerSpec:
    """Everything a reservation's container runs with; built by `container_spec`."""

    name: str
    image: str
    command: list[str] | None
    nano_cpus: int
    memory_bytes: int
    memory_swap_bytes: int
    shm_bytes: int
    gpu_ids: list[str]
    environment: dict[str, str]
    ssh_port: int | None  # None: no port published (batch jobs)
    mounts: list[Mount]
    labels: dict[str, str]
    cpu_count: int = 0  # the booked CPUs rounded up: the size the container is shown
    cpuset: str = ""  # host CPUs it is pinned to ("0-1,3"); "": chosen at launch, or none
    # Read when the spec is made, so every container, whoever builds its spec, is fenced in.
    security: SecurityOptions = field(default_factory=SecurityOptions.from_settings)


@dataclass(frozen=True)
class ContainerState:
    """A managed container as the engine reports it."""

    id: str
    name: str
    status: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def is_running(self) -> bool:
        return self.status == "running"

    @property
    def reservation_id(self) -> int | None:
        value = self.labels.get(LABEL_RESERVATION, "")
        return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class MemorySplit:
    memory_gb: int
    memory_swap_gb: int
    shm_gb: int


def memory_split(*, memory_gb: int, host: Host) -> MemorySplit:
    """Booked memory M on a host that lends RAM and swap: ceil(M * ram share) GiB of RAM,
    M GiB of RAM plus swap, and the rest as /dev/shm (the old run_container's split).
    Fractions keep e.g. 10 * 0.8 from rounding up to 9."""
    total = host.ram_gb + host.swap_gb
    ram_share = Fraction(host.ram_gb, total) if total else Fraction(1)
    ram = ceil(memory_gb * ram_share)
    return MemorySplit(memory_gb=ram, memory_swap_gb=memory_gb, shm_gb=memory_gb - ram)


def cpu_count(cpus: Decimal | float | int) -> int:
    """How many CPUs a booking of `cpus` sees: the booking rounded up (1.5 -> 2), at least 1.
    The CFS quota (`nano_cpus`) stays the real limit."""
    return max(1, ceil(Decimal(str(cpus))))


def thread_environment(count: int) -> dict[str, str]:
    """The thread-count variables for a container of `count` CPUs."""
    return {name: str(count) for name in THREAD_VARIABLES}


def parse_cpuset(text: str) -> list[int]:
    """`0-2,5` -> [0, 1, 2, 5] (the kernel's and Docker's list format); "" -> []."""
    cpus: set[int] = set()
    for part in filter(None, (piece.strip() for piece in (text or "").split(","))):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return sorted(cpus)


def format_cpuset(cpus: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> `0-2,5`."""
    ordered, parts = sorted(set(cpus)), []
    for cpu in ordered:
        if parts and parts[-1][1] == cpu - 1:
            parts[-1][1] = cpu
        else:
            parts.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def choose_cpus(*, count: int, cpus: Iterable[int], load: Mapping[int, float]) -> list[int] | None:
    """The `count` least-loaded of the host's `cpus` (ties: the lowest number), given how
    much of each the running containers are booked for; None when the host has fewer."""
    candidates = sorted(cpus, key=lambda cpu: (load.get(cpu, 0.0), cpu))
    if count < 1 or count > len(candidates):
        return None
    return sorted(candidates[:count])


def container_name(username: str) -> str:
    return f"{settings.CONTAINER_PREFIX}{username}"


def job_container_name(username: str, job_id: int) -> str:
    """A job's container has a name of its own, so a user may hold a booking and jobs."""
    return f"{settings.CONTAINER_PREFIX}{username}-job-{job_id}"


def scope_labels(host: Host) -> dict[str, str]:
    """The labels that mark a container as this portal's on this host. The host is named
    by its primary key, which never changes, so renaming a Host never orphans its
    containers; the name label is only for people reading `docker ps`."""
    return {LABEL_MANAGED: settings.CONTAINER_SCOPE, LABEL_HOST_ID: str(host.pk), LABEL_HOST: host.name}


def belongs_to(labels: dict[str, str], host: Host) -> bool:
    """Whether a container of this portal's scope is the host's. Containers started before
    the host id label existed carry only the name; they are found by it until they end."""
    if labels.get(LABEL_MANAGED) != settings.CONTAINER_SCOPE:
        return False
    if LABEL_HOST_ID in labels:
        return labels[LABEL_HOST_ID] == str(host.pk)
    return labels.get(LABEL_HOST) == host.name


def container_command(reservation: Reservation) -> list[str] | None:
    """The image's start command then the user's extra command, as an argument list; both
    empty means the image's own command. Never a shell string."""
    start_command = reservation.image.start_command if reservation.image else ""
    arguments = command_arguments(start_command) + command_arguments(reservation.extra_command or "")
    return arguments or None


def gpu_device_ids(reservation: Reservation) -> list[str]:
    """The reservation's GPUs as the engine addresses them, in the order of the indices
    users see: by UUID when known, so a reboot that renumbers the GPUs still hands over the
    same physical ones; by index for a GPU whose UUID was never read."""
    gpus = sorted({allocation.gpu for allocation in reservation.allocations.all()}, key=lambda gpu: gpu.index)
    return [gpu.uuid or str(gpu.index) for gpu in gpus]


def container_spec(*, reservation: Reservation, image: str, mounts: list[Mount]) -> ContainerSpec:
    """The container a reservation runs with, exactly as booked (DESIGN.md, Containers)."""
    host = reservation.host
    split = memory_split(memory_gb=reservation.memory_gb, host=host)
    gpu_ids = gpu_device_ids(reservation)
    count = cpu_count(reservation.cpus)
    return ContainerSpec(
        name=container_name(reservation.user.username),
        image=image,
        command=container_command(reservation),
        nano_cpus=int(reservation.cpus * 10**9),
        memory_bytes=split.memory_gb * GIB,
        memory_swap_bytes=split.memory_swap_gb * GIB,
        shm_bytes=split.shm_gb * GIB,
        gpu_ids=gpu_ids,
        # Never "all": a container without GPUs must not see the host's GPUs.
        environment={
            "NVIDIA_VISIBLE_DEVICES": ",".join(gpu_ids) or "none",
            "TZ": settings.TIME_ZONE,
            **thread_environment(count),
        },
        ssh_port=reservation.forward_port,
        mounts=mounts,
        labels={
            **scope_labels(host),
            LABEL_RESERVATION: str(reservation.pk),
            LABEL_USER: reservation.user.username,
        },
        cpu_count=count,
    )


def job_mode_environment(*, lab_modes: bool) -> dict[str, str]:
    """A lab image's entrypoint runs sshd unless told otherwise; in job mode it runs the
    command as the container's main process, so the command's exit code is the job's. Any
    other image runs the command as its own command, with nothing added."""
    return {MODE_VARIABLE: "job"} if lab_modes else {}


def job_container_spec(
    *,
    reservation: Reservation,
    job_id: int,
    command: list[str] | None,
    image: str,
    mounts: list[Mount],
    lab_modes: bool = False,
) -> ContainerSpec:
    """A batch job's container: the reservation's resources and GPUs exactly as held, the
    job's command as an argument list (never a shell), no SSH port, its output folder named
    in JOB_OUTPUT; on a lab image (`lab_modes`), in the entrypoint's job mode."""
    spec = container_spec(reservation=reservation, image=image, mounts=mounts)
    return replace(
        spec,
        name=job_container_name(reservation.user.username, job_id),
        command=command,
        ssh_port=None,
        environment={
            **spec.environment,
            **job_mode_environment(lab_modes=lab_modes),
            "JOB_ID": str(job_id),
            "JOB_OUTPUT": f"/root/Work/jobs/{job_id}",
        },
        labels={**spec.labels, LABEL_JOB: str(job_id)},
    )
