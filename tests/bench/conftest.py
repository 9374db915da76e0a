import platform
import statistics
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(samples, 0.50),
        "p95": percentile(samples, 0.95),
        "mean": statistics.fmean(samples),
        "n": len(samples),
    }


def image_found_on(*, host, image, now) -> None:
    """The host's agent found the image in its engine at `now`, as it has for nearly every
    booking in a lab: the booking then queues no image check."""
    from containers.image_services import image_presence_record
    from containers.models import ImagePresence

    image_presence_record(host=host, image=image, state=ImagePresence.State.PRESENT, now=now)


def machine() -> str:
    import os

    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"


@pytest.fixture
def write_figures():
    def write(name: str, text: str) -> None:
        FIGURES.mkdir(parents=True, exist_ok=True)
        (FIGURES / name).write_text(text)
        print(text)

    return write


# The container benchmark uses the container tests' engine fixtures.
from tests.containers.conftest import (  # noqa: E402, F401
    docker_client,
    docker_scope,
    engine_host,
    roots,
    test_image,
)
