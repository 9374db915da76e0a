import logging
import os
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured

from containers import gpus
from containers.gpus import FakeProbe, GpuProcess, GpuReading, NvmlProbe
from tests.containers.nvml_file_probe import FILE_VARIABLE, reads_of, write_nvml

GIB = 1024**3


class FakeNvmlError(Exception):
    pass


class NotSupported(FakeNvmlError):
    pass


def fake_nvml(**overrides: object) -> SimpleNamespace:
    """A stand-in for the pynvml module with one RTX 3090 busy with two processes."""
    calls = {"init": 0, "shutdown": 0}

    def init() -> None:
        calls["init"] += 1

    def shutdown() -> None:
        calls["shutdown"] += 1

    module = SimpleNamespace(
        NVMLError=FakeNvmlError,
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=shutdown,
        nvmlDeviceGetCount=lambda: 1,
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",
        nvmlDeviceGetHandleByIndex=lambda index: f"handle-{index}",
        nvmlDeviceGetUUID=lambda handle: "GPU-5d1b2c3a-0000-0000-0000-000000000001",
        nvmlDeviceGetName=lambda handle: b"NVIDIA GeForce RTX 3090",
        nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(total=24 * GIB, used=6 * GIB + 123, free=0),
        nvmlDeviceGetUtilizationRates=lambda handle: SimpleNamespace(gpu=37, memory=12),
        nvmlDeviceGetComputeRunningProcesses=lambda handle: [
            SimpleNamespace(pid=4242, usedGpuMemory=GIB),
            SimpleNamespace(pid=4243, usedGpuMemory=None),
        ],
    )
    for name, value in overrides.items():
        setattr(module, name, value)
    return module


def raises(error: Exception):
    def function(*args: object) -> None:
        raise error

    return function


def test_it_reads_memory_in_mib_and_decodes_names():
    result = NvmlProbe(nvml=fake_nvml()).read()

    assert result.available
    assert result.gpus == (
        GpuReading(
            index=0,
            uuid="GPU-5d1b2c3a-0000-0000-0000-000000000001",
            name="NVIDIA GeForce RTX 3090",
            memory_total_mb=24576,
            memory_used_mb=6144,
            utilisation_percent=37,
            processes=(GpuProcess(pid=4242, used_memory_mb=1024), GpuProcess(pid=4243, used_memory_mb=None)),
        ),
    )


def test_it_reports_no_utilisation_where_the_device_does_not():
    nvml = fake_nvml(nvmlDeviceGetUtilizationRates=raises(NotSupported("Not Supported")))

    (gpu,) = NvmlProbe(nvml=nvml).read()

    assert gpu.utilisation_percent is None


def test_it_falls_back_to_the_older_process_listing():
    nvml = fake_nvml(
        nvmlDeviceGetComputeRunningProcesses=raises(FakeNvmlError("Function Not Found")),
        nvmlDeviceGetComputeRunningProcesses_v2=lambda handle: [
            SimpleNamespace(pid=7, usedGpuMemory=2 * GIB)
        ],
    )

    (gpu,) = NvmlProbe(nvml=nvml).read()

    assert gpu.processes == (GpuProcess(pid=7, used_memory_mb=2048),)


def test_it_answers_unavailable_when_nvml_does_not_start():
    nvml = fake_nvml(nvmlInit=raises(FakeNvmlError("Driver Not Loaded")))

    result = NvmlProbe(nvml=nvml).read()

    assert not result.available
    assert "Driver Not Loaded" in result.unavailable_reason
    assert list(result) == []


def test_it_answers_unavailable_when_a_device_fails_and_still_shuts_nvml_down():
    nvml = fake_nvml(nvmlDeviceGetMemoryInfo=raises(FakeNvmlError("GPU is lost")))

    result = NvmlProbe(nvml=nvml).read()

    assert not result.available
    assert "GPU is lost" in result.unavailable_reason
    assert nvml.calls == {"init": 1, "shutdown": 1}


def test_the_real_library_without_a_driver_answers_unavailable_without_raising():
    result = gpus.probe()
    if result.available:
        pytest.skip("this machine has a working NVIDIA driver")

    assert result.unavailable_reason
    assert list(result) == []


def test_it_logs_unavailable_once_per_process(monkeypatch, caplog):
    monkeypatch.setattr(gpus, "_unavailable_logged", False)
    monkeypatch.setattr(
        gpus, "NvmlProbe", lambda: FakeProbe(unavailable_reason="NVML Shared Library Not Found")
    )

    with caplog.at_level(logging.WARNING, logger="containers.gpus"):
        gpus.probe()
        gpus.probe()

    lines = [record.getMessage() for record in caplog.records if record.name == "containers.gpus"]
    assert lines == ["GPU information unavailable: NVML Shared Library Not Found"]


def test_the_fake_probe_gives_what_bootstrap_host_reads():
    reading = GpuReading(
        index=1,
        uuid="GPU-1",
        name="NVIDIA A100",
        memory_total_mb=40960,
        memory_used_mb=0,
        utilisation_percent=0,
    )

    result = FakeProbe([reading]).read()

    assert [(gpu.index, gpu.uuid, gpu.name, gpu.memory_total_mb) for gpu in result] == [
        (1, "GPU-1", "NVIDIA A100", 40960)
    ]


def test_it_reads_the_driver_version_for_the_agents_heartbeat():
    assert NvmlProbe(nvml=fake_nvml()).read().driver_version == "550.54.15"


@pytest.mark.parametrize(("answer", "version"), [(12040, "12.4"), (11080, "11.8"), (12000, "12.0")])
def test_it_reads_the_newest_cuda_the_driver_supports(answer, version):
    nvml = fake_nvml(nvmlSystemGetCudaDriverVersion=lambda: answer)
    assert NvmlProbe(nvml=nvml).read().cuda_driver_version == version


def test_a_binding_or_driver_without_the_cuda_call_reports_no_cuda_version():
    assert NvmlProbe(nvml=fake_nvml()).read().cuda_driver_version == ""
    failing = fake_nvml(nvmlSystemGetCudaDriverVersion=raises(NotSupported("Not Supported")))
    result = NvmlProbe(nvml=failing).read()
    assert result.available
    assert result.cuda_driver_version == ""


def test_the_probe_is_the_class_gpu_probe_names(settings, tmp_path, monkeypatch):
    nvml = tmp_path / "nvml.json"
    write_nvml(nvml, gpus=[{"index": 0, "uuid": "GPU-a0", "utilisation_percent": 40}], driver_version="1.2")
    monkeypatch.setenv(FILE_VARIABLE, str(nvml))
    settings.GPU_PROBE = "tests.containers.nvml_file_probe.JsonFileProbe"
    settings.AIVC_HOST = "gpu-a"

    result = gpus.probe()

    assert [(gpu.uuid, gpu.utilisation_percent) for gpu in result] == [("GPU-a0", 40)]
    assert result.driver_version == "1.2"
    assert reads_of(nvml) == [("gpu-a", os.getpid())]


def test_a_gpu_probe_that_does_not_import_is_a_configuration_error(settings):
    settings.GPU_PROBE = "containers.gpus.NoSuchProbe"

    with pytest.raises(ImproperlyConfigured, match=r"GPU_PROBE='containers\.gpus\.NoSuchProbe'"):
        gpus.probe()
