"""Telemetry's scheduled work. The schedules call these through the stable names in
`containers.tasks` (sample_gpus, sync_gpu_inventory, prune_gpu_samples)."""

import logging

from django.utils import timezone

from containers import gpus
from containers.telemetry.selectors import telemetry_host
from containers.telemetry.services import (
    gpu_duplicate_use_check,
    gpu_inventory_sync,
    gpu_renumber_sync,
    gpu_samples_prune,
    gpu_samples_record,
    reservation_idle_update,
)

logger = logging.getLogger(__name__)


def sample_gpus() -> int:
    """Every minute: stores a sample per GPU, warns about duplicate use, flags idle
    reservations. Returns how many samples were stored."""
    host = telemetry_host()
    if host is None:
        logger.info("No Host matches this machine; set GPU_HOST_NAME to sample its GPUs.")
        return 0
    result = gpus.probe()
    now = timezone.now()
    # Before anything is filed by index: a reboot may have renumbered the GPUs.
    gpu_renumber_sync(host=host, result=result, now=now)
    samples = gpu_samples_record(host=host, result=result, now=now)
    gpu_duplicate_use_check(host=host, result=result, now=now)
    reservation_idle_update(host=host, now=now)
    return len(samples)


def sync_gpu_inventory() -> int:
    """Every hour: brings the GPU rows in line with what NVML reports. Returns how many
    events it wrote."""
    host = telemetry_host()
    if host is None:
        logger.info("No Host matches this machine; set GPU_HOST_NAME to sync its GPUs.")
        return 0
    return len(gpu_inventory_sync(host=host, result=gpus.probe()))


def prune_gpu_samples() -> int:
    """Daily: drops samples older than GPU_SAMPLE_RETENTION_DAYS."""
    return gpu_samples_prune()
