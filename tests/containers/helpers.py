"""Helpers shared by the container lifecycle tests."""

import os
from pathlib import Path

import pytest

from containers.fake_runtime import FakeRuntime
from containers.models import ContainerEvent, SpaceAudit
from containers.specs import ContainerSpec

SETUP_ENGINES = str(Path(__file__).resolve().parents[2] / "deploy/test-engine/setup.sh")
# Stopping dockerd kills every container on the machine (on a GPU server: every student's),
# so such a test runs only when asked for explicitly; .ci/run asks, on its own engines.
destructive_engine_test = pytest.mark.skipif(
    os.environ.get("AIVC_DESTRUCTIVE_ENGINE_TESTS") != "1" or os.geteuid() != 0,
    reason="stops a Docker engine: runs only as root with AIVC_DESTRUCTIVE_ENGINE_TESTS=1 (CI)",
)


def SpaceAuditFactory(**fields) -> SpaceAudit:
    return SpaceAudit.objects.create(**fields)


def engine(reservation) -> "FakeRuntime":
    return FakeRuntime.engine_for(reservation.host)


def only_spec(reservation) -> ContainerSpec:
    specs = [spec for _, spec in engine(reservation).containers.values()]
    assert len(specs) == 1
    return specs[0]


def events(reservation, **filters):
    return list(ContainerEvent.objects.filter(host=reservation.host, **filters).order_by("created_at", "pk"))
