"""Container engines. The one module that imports `docker`: the rest of the portal talks to
a `ContainerRuntime` and hands it a `ContainerSpec`, so unit tests can swap in the
`FakeRuntime` and the Docker runtime is tested against a real engine."""

from __future__ import annotations

import contextlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from math import ceil
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.module_loading import import_string

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
SSH_PORT = "22/tcp"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
NETWORK_LABELS = {"aivc.purpose": "tenant-isolation"}
# The entrypoint of the images built from deploy/images/ (and the offline test image).
LAB_ENTRYPOINT = "/usr/local/sbin/aivc-entrypoint"


class RuntimeProblem(Exception):
    """Base of what an engine can answer instead of doing the work."""


class EngineUnavailable(RuntimeProblem):
    """The engine did not answer: nothing was decided, try again later."""


class ImageMissing(RuntimeProblem):
    """The engine does not hold the image: launching cannot succeed until a maintainer
    pulls it."""


class PullFailed(RuntimeProblem):
    """The engine could not pull the image (unknown name, no registry access, no space)."""


class NameInUse(RuntimeProblem):
    """A container with the spec's name exists already (e.g. a crashed tick made it)."""


class BuildFailed(RuntimeProblem):
    """The engine could not build an uploaded image (a bad Dockerfile, a failing step, the
    time limit); the message says which. The build's output so far is in `output`."""

    def __init__(self, message: str, *, output: bytes = b"") -> None:
        super().__init__(message)
        self.output = output


class LaunchFailed(RuntimeProblem):
    """The engine refused the container for another reason (its message says why)."""


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
        environment={"NVIDIA_VISIBLE_DEVICES": ",".join(gpu_ids) or "none", "TZ": settings.TIME_ZONE},
        ssh_port=reservation.forward_port,
        mounts=mounts,
        labels={
            **scope_labels(host),
            LABEL_RESERVATION: str(reservation.pk),
            LABEL_USER: reservation.user.username,
        },
    )


def job_container_spec(
    *, reservation: Reservation, job_id: int, command: list[str] | None, image: str, mounts: list[Mount]
) -> ContainerSpec:
    """A batch job's container: the reservation's resources and GPUs exactly as held, the
    job's command as an argument list (never a shell), no SSH port, its output folder named
    in JOB_OUTPUT."""
    spec = container_spec(reservation=reservation, image=image, mounts=mounts)
    return replace(
        spec,
        name=job_container_name(reservation.user.username, job_id),
        command=command,
        ssh_port=None,
        environment={**spec.environment, "JOB_ID": str(job_id), "JOB_OUTPUT": f"/root/Work/jobs/{job_id}"},
        labels={**spec.labels, LABEL_JOB: str(job_id)},
    )


class ContainerRuntime(ABC):
    """One host's container engine."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @abstractmethod
    def list_managed(self) -> list[ContainerState]:
        """All containers, running or not, that carry this portal's labels for the host."""

    @abstractmethod
    def run(self, spec: ContainerSpec) -> ContainerState:
        """Creates and starts the container; raises a `RuntimeProblem` subclass."""

    @abstractmethod
    def remove(self, container_id: str) -> None:
        """Stops and removes the container; one already gone is not an error."""

    def engine_version(self) -> str:
        """The engine's version, for the agent's heartbeat; raises EngineUnavailable."""
        return ""

    @abstractmethod
    def image_present(self, reference: str) -> bool:
        """Whether the engine holds the image."""

    @abstractmethod
    def pull_image(self, reference: str, *, progress: Callable[[str], None]) -> None:
        """Pulls the image, calling `progress` with the engine's status lines; raises
        `PullFailed` or `EngineUnavailable`."""

    @abstractmethod
    def lab_images(self) -> list[str]:
        """Tags of the engine's images that start the lab entrypoint (key-only sshd)."""

    # Batch jobs: a job's container is stopped at its time limit and read (exit code, output)
    # before it is removed.

    @abstractmethod
    def build_image(
        self, *, tag: str, context: bytes, labels: dict[str, str], timeout_s: int, memory_bytes: int
    ) -> bytes:
        """Builds `tag` from a build context (an uncompressed tar holding a Dockerfile) and
        returns the build's output; BuildFailed with the output so far if it fails or runs
        past `timeout_s`. Each step's container gets at most `memory_bytes` (no swap).
        Never pulls: a FROM must name an image the engine has."""

    @abstractmethod
    def stop(self, container_id: str, *, grace_s: int) -> None:
        """SIGTERM, up to `grace_s` seconds to exit, then SIGKILL; the container stays."""

    @abstractmethod
    def exit_code(self, container_id: str) -> int | None:
        """The exit code of a container that has exited; None while it runs or if gone."""

    @abstractmethod
    def logs(self, container_id: str) -> Iterator[bytes]:
        """The container's output (stdout and stderr, as written), in chunks."""


class DockerRuntime(ContainerRuntime):
    """A Docker engine through the SDK (never the CLI, never a shell)."""

    STOP_TIMEOUT_S = 10
    API_TIMEOUT_S = 30

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._client = None

    @property
    def client(self):
        import docker

        if self._client is None:
            try:
                if self.host.docker_url:
                    self._client = docker.DockerClient(
                        base_url=self.host.docker_url, timeout=self.API_TIMEOUT_S
                    )
                else:
                    self._client = docker.from_env(timeout=self.API_TIMEOUT_S)
            except docker.errors.DockerException as error:
                raise EngineUnavailable(f"Docker engine of {self.host.name} unreachable: {error}") from None
        return self._client

    def _translate(self, error: Exception) -> RuntimeProblem:
        import docker
        import requests

        if isinstance(error, RuntimeProblem):
            return error
        if isinstance(error, docker.errors.ImageNotFound):
            return ImageMissing(str(error.explanation or error))
        if isinstance(error, docker.errors.APIError):
            if error.status_code == 409:
                return NameInUse(str(error.explanation or error))
            if error.status_code and error.status_code >= 500 and "connect" in str(error).lower():
                return EngineUnavailable(str(error.explanation or error))
            return LaunchFailed(str(error.explanation or error))
        if isinstance(error, requests.exceptions.RequestException | docker.errors.DockerException | OSError):
            return EngineUnavailable(f"Docker engine of {self.host.name} unreachable: {error}")
        return LaunchFailed(str(error))

    # The launch threads of one agent (AGENT_LAUNCH_WORKERS) would each find no network and
    # each make one: the engine takes duplicate names, and a name that matches several
    # networks is refused by every later launch ("network ... is ambiguous").
    _network_lock = threading.Lock()

    def _ensure_network(self, name: str) -> None:
        """The portal's bridge network with inter-container traffic off, made once; an
        existing network of that name that lets containers reach each other is refused."""
        import docker

        def named() -> list:  # the engine's name filter matches substrings
            return [network for network in self.client.networks.list(names=[name]) if network.name == name]

        with self._network_lock:
            found = named()
            if not found:
                try:
                    self.client.networks.create(
                        name,
                        driver="bridge",
                        options={ICC_OPTION: "false"},
                        labels=NETWORK_LABELS,
                        check_duplicate=True,
                    )
                except docker.errors.APIError as error:
                    if error.status_code != 409:  # 409: another process made it meanwhile
                        raise
                found = named()
        options = (found[0].attrs.get("Options") or {}) if found else {}
        if options.get(ICC_OPTION) != "false":
            raise LaunchFailed(
                f"The network {name} lets containers reach each other ({ICC_OPTION} is not false); "
                "remove it or name another in CONTAINER_NETWORK."
            )

    def _security_options(self, security: SecurityOptions) -> dict:
        import docker

        options = {
            "cap_drop": ["ALL"],
            "cap_add": list(security.cap_add),
            "security_opt": ["no-new-privileges:true"] if security.no_new_privileges else [],
            "ulimits": [
                docker.types.Ulimit(name="nofile", soft=security.nofile, hard=security.nofile),
                docker.types.Ulimit(name="nproc", soft=security.nproc, hard=security.nproc),
            ],
            "log_config": docker.types.LogConfig(
                type="json-file",
                config={"max-size": security.log_max_size, "max-file": str(security.log_max_files)},
            ),
        }
        if security.pids_limit:
            options["pids_limit"] = security.pids_limit
        if security.network:
            options["network"] = security.network
        return options

    def list_managed(self) -> list[ContainerState]:
        # The engine filters by this portal's scope; which host a container is on is
        # decided here, since old containers carry the host's name instead of its id.
        filters = {"label": f"{LABEL_MANAGED}={settings.CONTAINER_SCOPE}"}
        try:
            containers = self.client.containers.list(all=True, filters=filters, ignore_removed=True)
        except Exception as error:
            raise self._translate(error) from None
        return [
            ContainerState(id=c.id, name=c.name, status=c.status, labels=dict(c.labels))
            for c in containers
            if belongs_to(c.labels, self.host)
        ]

    def run(self, spec: ContainerSpec) -> ContainerState:
        import docker

        device_requests = []
        if spec.gpu_ids:
            device_requests.append(
                docker.types.DeviceRequest(driver="nvidia", device_ids=spec.gpu_ids, capabilities=[["gpu"]])
            )
        options = {
            "image": spec.image,
            "command": spec.command,
            "name": spec.name,
            "hostname": spec.name,
            "detach": True,
            "nano_cpus": spec.nano_cpus,
            "mem_limit": spec.memory_bytes,
            "memswap_limit": spec.memory_swap_bytes,
            "environment": spec.environment,
            "ports": {SSH_PORT: spec.ssh_port} if spec.ssh_port else {},
            "mounts": [
                docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in spec.mounts
            ],
            "labels": spec.labels,
            "device_requests": device_requests,
            "privileged": False,
            "init": True,
            **self._security_options(spec.security),
        }
        if spec.shm_bytes:
            options["shm_size"] = spec.shm_bytes
        container = None
        try:
            if spec.security.network:
                self._ensure_network(spec.security.network)
            container = self.client.containers.create(**options)
            container.start()
            container.reload()
        except Exception as error:
            problem = self._translate(error)
            if container is not None and not isinstance(problem, EngineUnavailable):
                # Created but not started (e.g. the port is taken): leave nothing behind;
                # if even that fails, the next tick removes it as unowned.
                with contextlib.suppress(RuntimeProblem):
                    self.remove(container.id)
            raise problem from None
        return ContainerState(
            id=container.id, name=container.name, status=container.status, labels=dict(container.labels)
        )

    def remove(self, container_id: str) -> None:
        import docker

        try:
            container = self.client.containers.get(container_id)
            if container.status == "running":
                container.stop(timeout=self.STOP_TIMEOUT_S)
            container.remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as error:
            if error.status_code == 409:
                return  # the engine is removing it already
            raise self._translate(error) from None
        except Exception as error:
            raise self._translate(error) from None

    def image_present(self, reference: str) -> bool:
        import docker

        try:
            self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        except Exception as error:
            raise self._translate(error) from None
        return True

    def lab_images(self) -> list[str]:
        try:
            images = self.client.images.list()
        except Exception as error:
            raise self._translate(error) from None
        return sorted(
            tag
            for image in images
            if LAB_ENTRYPOINT in ((image.attrs.get("Config") or {}).get("Entrypoint") or [])
            for tag in image.tags
        )

    def pull_image(self, reference: str, *, progress: Callable[[str], None]) -> None:
        import docker

        repository, tag = docker.utils.parse_repository_tag(reference)
        try:
            for line in self.client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in line:
                    raise PullFailed(str(line["error"]))
                status = " ".join(str(line[key]) for key in ("status", "progress") if line.get(key))
                if status:
                    progress(status)
        except PullFailed:
            raise
        except docker.errors.APIError as error:
            raise PullFailed(str(error.explanation or error)) from None
        except Exception as error:
            raise self._translate(error) from None

    def engine_version(self) -> str:
        try:
            return str(self.client.version().get("Version", ""))
        except Exception as error:
            raise self._translate(error) from None

    def build_image(
        self, *, tag: str, context: bytes, labels: dict[str, str], timeout_s: int, memory_bytes: int
    ) -> bytes:
        import io
        import time

        import docker
        import requests
        import urllib3

        output = bytearray()
        deadline = time.monotonic() + timeout_s
        try:
            # The low-level build streams the engine's progress; its read timeout ends a
            # step that stays silent past the limit, the deadline one that keeps talking.
            # Leaving the stream makes the engine cancel the build.
            stream = self.client.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                tag=tag,
                labels=labels,
                rm=True,
                forcerm=True,
                pull=False,
                container_limits={"memory": memory_bytes, "memswap": memory_bytes},
                decode=True,
                timeout=timeout_s,
            )
            for line in stream:
                if "stream" in line:
                    output += str(line["stream"]).encode()
                if "error" in line:
                    message = str(line.get("error") or "").strip()
                    output += f"ERROR: {message}\n".encode()
                    raise BuildFailed(message, output=bytes(output))
                if time.monotonic() > deadline:
                    raise BuildFailed(f"the build ran longer than {timeout_s} s", output=bytes(output))
        except BuildFailed:
            raise
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError):
            raise BuildFailed(f"the build ran longer than {timeout_s} s", output=bytes(output)) from None
        except docker.errors.BuildError as error:
            raise BuildFailed(str(error.msg), output=bytes(output)) from None
        except docker.errors.APIError as error:
            problem = self._translate(error)
            if isinstance(problem, EngineUnavailable):
                raise problem from None
            raise BuildFailed(str(error.explanation or error), output=bytes(output)) from None
        except Exception as error:
            raise self._translate(error) from None
        return bytes(output)

    def stop(self, container_id: str, *, grace_s: int) -> None:
        import docker

        try:
            self.client.containers.get(container_id).stop(timeout=grace_s)
        except docker.errors.NotFound:
            return
        except Exception as error:
            raise self._translate(error) from None

    def exit_code(self, container_id: str) -> int | None:
        import docker

        try:
            container = self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return None
        except Exception as error:
            raise self._translate(error) from None
        state = container.attrs.get("State", {})
        return None if state.get("Running") else state.get("ExitCode")

    def logs(self, container_id: str) -> Iterator[bytes]:
        import docker

        try:
            stream = self.client.containers.get(container_id).logs(stream=True, follow=False)
            yield from stream
        except docker.errors.NotFound:
            return
        except Exception as error:
            raise self._translate(error) from None


class FakeEngine:
    """In-memory engine state shared by every FakeRuntime for one host."""

    def __init__(self) -> None:
        self.containers: dict[str, tuple[ContainerState, ContainerSpec]] = {}
        self.images: set[str] | None = None  # None: every image is present
        self.pullable: set[str] = set()  # images a pull finds (added to `images`)
        self.pulls: list[str] = []
        self.reachable = True
        self.runs: list[ContainerSpec] = []
        self.networks: set[str] = set()  # isolated networks made, as DockerRuntime makes them
        self.ids = itertools.count(1)
        self.exit_codes: dict[str, int] = {}  # by container id
        self.output: dict[str, bytes] = {}  # by container name, what a container "printed"
        self.builds: list[tuple[str, bytes]] = []  # (tag, context) of each build asked for
        self.build_failure: str = ""  # set: every build fails with this message
        self.build_memory: list[int] = []  # the memory limit of each build

    def kill(self, name: str) -> None:
        """What a container that died looks like: still there, exited."""
        for container_id, (state, spec) in list(self.containers.items()):
            if state.name == name:
                self.containers[container_id] = (
                    ContainerState(id=state.id, name=state.name, status="exited", labels=state.labels),
                    spec,
                )

    def exit(self, name: str, *, code: int, output: bytes = b"") -> None:
        """What a batch job's container that finished looks like: exited with `code`."""
        self.output[name] = self.output.get(name, b"") + output
        self.kill(name)
        for container_id, (state, _) in self.containers.items():
            if state.name == name:
                self.exit_codes[container_id] = code

    def running_names(self) -> list[str]:
        return sorted(state.name for state, _ in self.containers.values() if state.is_running)


class FakeRuntime(ContainerRuntime):
    """A runtime for unit tests of the lifecycle logic. Tests reach the shared state with
    `FakeRuntime.engine_for(host)` and call `FakeRuntime.reset()` between tests."""

    _engines: dict[int, FakeEngine] = {}
    _lock = threading.RLock()

    @classmethod
    def engine_for(cls, host: Host) -> FakeEngine:
        with cls._lock:
            return cls._engines.setdefault(host.pk, FakeEngine())

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._engines.clear()

    @property
    def engine(self) -> FakeEngine:
        return self.engine_for(self.host)

    def _check_reachable(self) -> None:
        if not self.engine.reachable:
            raise EngineUnavailable(f"Docker engine of {self.host.name} unreachable (fake).")

    def list_managed(self) -> list[ContainerState]:
        self._check_reachable()
        return [state for state, _ in self.engine.containers.values() if belongs_to(state.labels, self.host)]

    def run(self, spec: ContainerSpec) -> ContainerState:
        self._check_reachable()
        engine = self.engine
        with self._lock:
            if engine.images is not None and spec.image not in engine.images:
                raise ImageMissing(f"No such image: {spec.image}")
            if any(state.name == spec.name for state, _ in engine.containers.values()):
                raise NameInUse(f'The container name "/{spec.name}" is already in use.')
            state = ContainerState(
                id=f"fake{next(engine.ids):060d}", name=spec.name, status="running", labels=spec.labels
            )
            if spec.security.network:
                engine.networks.add(spec.security.network)
            engine.containers[state.id] = (state, spec)
            engine.runs.append(spec)
        return state

    def remove(self, container_id: str) -> None:
        self._check_reachable()
        with self._lock:
            self.engine.containers.pop(container_id, None)

    def engine_version(self) -> str:
        self._check_reachable()
        return "fake"

    def image_present(self, reference: str) -> bool:
        self._check_reachable()
        return self.engine.images is None or reference in self.engine.images

    def lab_images(self) -> list[str]:
        self._check_reachable()
        return sorted(self.engine.images or ())

    def pull_image(self, reference: str, *, progress: Callable[[str], None]) -> None:
        self._check_reachable()
        engine = self.engine
        engine.pulls.append(reference)
        if reference not in engine.pullable:
            raise PullFailed(f"pull access denied for {reference}, repository does not exist (fake)")
        progress("Pulling fs layer")
        progress("Download complete")
        with self._lock:
            if engine.images is not None:
                engine.images.add(reference)

    def build_image(
        self, *, tag: str, context: bytes, labels: dict[str, str], timeout_s: int, memory_bytes: int
    ) -> bytes:
        self._check_reachable()
        engine = self.engine
        engine.builds.append((tag, context))
        engine.build_memory.append(memory_bytes)
        if engine.build_failure:
            raise BuildFailed(engine.build_failure, output=f"ERROR: {engine.build_failure}\n".encode())
        with self._lock:
            if engine.images is not None:
                engine.images.add(tag)
        return f"Successfully tagged {tag}\n".encode()

    def stop(self, container_id: str, *, grace_s: int) -> None:
        self._check_reachable()
        with self._lock:
            found = self.engine.containers.get(container_id)
            if found is not None and found[0].is_running:
                self.engine.exit(found[0].name, code=143)  # 128 + SIGTERM

    def exit_code(self, container_id: str) -> int | None:
        self._check_reachable()
        return self.engine.exit_codes.get(container_id)

    def logs(self, container_id: str) -> Iterator[bytes]:
        self._check_reachable()
        found = self.engine.containers.get(container_id)
        if found is not None:
            yield self.engine.output.get(found[0].name, b"")


def get_runtime(host: Host) -> ContainerRuntime:
    """The runtime `settings.CONTAINER_RUNTIME` names, for this host's engine."""
    return import_string(settings.CONTAINER_RUNTIME)(host)
