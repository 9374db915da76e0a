"""What the GPUs of this machine report through NVML. The only module that imports `pynvml`
(package nvidia-ml-py), and only inside functions, so the portal runs where there is no
driver: `probe()` then answers "unavailable" with the reason instead of raising. The probe
class is `settings.GPU_PROBE` (NvmlProbe), so tests can give an agent process a stand-in."""

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

UNAVAILABLE = "GPU information unavailable"
MIB = 1024 * 1024

# Newest first: an older driver lacks the newer entry points (NVMLError_FunctionNotFound).
_PROCESS_LISTERS = (
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetComputeRunningProcesses_v2",
)


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    # None where the driver does not say (MIG instances, Windows WDDM).
    used_memory_mb: int | None


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    name: str
    memory_total_mb: int
    memory_used_mb: int
    # None where the device does not report utilisation.
    utilisation_percent: int | None
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    """The GPUs read at one moment, or why none could be read. Iterating gives the GPUs."""

    gpus: tuple[GpuReading, ...] = ()
    unavailable_reason: str = ""
    driver_version: str = ""
    # The newest CUDA the driver supports, "major.minor" (e.g. "12.4"); "" where unknown.
    cuda_driver_version: str = ""

    @property
    def available(self) -> bool:
        return not self.unavailable_reason

    def __iter__(self) -> Iterator[GpuReading]:
        return iter(self.gpus)


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _mib(value: int | None) -> int | None:
    return None if value is None else int(value) // MIB


def cuda_version_text(version: int) -> str:
    """NVML's (and the CUDA runtime's) integer form, 1000 * major + 10 * minor, as text."""
    return f"{version // 1000}.{version % 1000 // 10}" if version > 0 else ""


def cuda_version_tuple(text: str) -> tuple[int, int] | None:
    """(major, minor) of a CUDA version as people write it ("12.4", "cuda12.4.1", "11.8");
    None when it names none."""
    found = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


class NvmlProbe:
    """Reads every GPU through NVML. `nvml` is the pynvml module; tests of the parsing hand
    in a stand-in, everyone else leaves it out."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml = nvml

    def _module(self) -> ModuleType:
        if self._nvml is None:
            import pynvml

            self._nvml = pynvml
        return self._nvml

    def read(self) -> ProbeResult:
        try:
            nvml = self._module()
        except ImportError as error:
            return ProbeResult(unavailable_reason=f"nvidia-ml-py is not installed ({error})")
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            return ProbeResult(unavailable_reason=f"NVML did not start: {error}")
        try:
            count = nvml.nvmlDeviceGetCount()
            return ProbeResult(
                gpus=tuple(self._read_device(nvml, index) for index in range(count)),
                driver_version=self._driver_version(nvml),
                cuda_driver_version=self._cuda_driver_version(nvml),
            )
        except nvml.NVMLError as error:
            return ProbeResult(unavailable_reason=f"NVML failed while reading the GPUs: {error}")
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                logger.debug("nvmlShutdown failed", exc_info=True)

    def _read_device(self, nvml: ModuleType, index: int) -> GpuReading:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return GpuReading(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_total_mb=_mib(memory.total),
            memory_used_mb=_mib(memory.used),
            utilisation_percent=self._utilisation(nvml, handle),
            processes=self._processes(nvml, handle),
        )

    @staticmethod
    def _driver_version(nvml: ModuleType) -> str:
        try:
            return _text(nvml.nvmlSystemGetDriverVersion())
        except (nvml.NVMLError, AttributeError):
            return ""

    @staticmethod
    def _cuda_driver_version(nvml: ModuleType) -> str:
        """NVML answers e.g. 12040 for CUDA 12.4; an old binding or driver lacks the call."""
        try:
            version = int(nvml.nvmlSystemGetCudaDriverVersion())
        except (nvml.NVMLError, AttributeError, TypeError, ValueError):
            return ""
        return cuda_version_text(version)

    @staticmethod
    def _utilisation(nvml: ModuleType, handle: object) -> int | None:
        try:
            return int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except nvml.NVMLError:
            return None

    @staticmethod
    def _processes(nvml: ModuleType, handle: object) -> tuple[GpuProcess, ...]:
        for lister in _PROCESS_LISTERS:
            function = getattr(nvml, lister, None)
            if function is None:
                continue
            try:
                running = function(handle)
            except nvml.NVMLError as error:
                logger.debug("%s failed: %s", lister, error)
                continue
            return tuple(
                GpuProcess(pid=int(process.pid), used_memory_mb=_mib(process.usedGpuMemory))
                for process in running
            )
        return ()


class FakeProbe:
    """Answers what it was given: for tests and demos without a GPU."""

    def __init__(
        self,
        gpus: list[GpuReading] | tuple[GpuReading, ...] = (),
        unavailable_reason: str = "",
        driver_version: str = "",
        cuda_driver_version: str = "",
    ):
        self.result = ProbeResult(
            gpus=tuple(gpus),
            unavailable_reason=unavailable_reason,
            driver_version=driver_version,
            cuda_driver_version=cuda_driver_version,
        )

    def read(self) -> ProbeResult:
        return self.result


_unavailable_logged = False
_log_lock = threading.Lock()


def _log_unavailable_once(reason: str) -> None:
    """A machine without a driver would otherwise log the same line every minute."""
    global _unavailable_logged
    with _log_lock:
        if _unavailable_logged:
            return
        _unavailable_logged = True
    logger.warning("%s: %s", UNAVAILABLE, reason)


def probe_class() -> type:
    """The class settings.GPU_PROBE names; a path that does not import is a configuration
    error, never "no GPUs"."""
    try:
        return import_string(settings.GPU_PROBE)
    except ImportError as error:
        raise ImproperlyConfigured(f"GPU_PROBE={settings.GPU_PROBE!r} does not import: {error}") from error


def probe() -> ProbeResult:
    """This machine's GPUs now; never raises for a missing driver or library."""
    result = probe_class()().read()
    if not result.available:
        _log_unavailable_once(result.unavailable_reason)
    return result
