import os
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from containers.fake_runtime import FakeRuntime
from containers.specs import LABEL_MANAGED
from tests.factories import ImageFactory, ReservationFactory, UserFactory, host_with_roots
from tests.images import TEST_IMAGE


@pytest.fixture
def roots(tmp_path):
    paths = {name: tmp_path / name for name in ("work", "backup", "dataset")}
    for path in paths.values():
        path.mkdir()
    return paths


@pytest.fixture
def engine_host(db, roots):
    return host_with_roots(roots["work"].parent, name=f"engine-{uuid.uuid4().hex[:6]}", gpus=2)


@pytest.fixture
def fake_runtime(settings):
    settings.CONTAINER_RUNTIME = "containers.fake_runtime.FakeRuntime"
    FakeRuntime.reset()
    yield FakeRuntime
    FakeRuntime.reset()


@pytest.fixture
def window():
    """A window that contains now: started a minute ago, ends in an hour."""
    now = timezone.now()
    return {"start": now - timedelta(minutes=1), "end": now + timedelta(hours=1)}


def _docker_client():
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception as error:
        return error


@pytest.fixture(scope="session")
def docker_client():
    """The local engine. Without one the test skips, unless AIVC_REQUIRE_DOCKER=1 (CI),
    where a missing engine fails the test."""
    client = _docker_client()
    if isinstance(client, Exception):
        message = f"No Docker engine answers ({client}); run deploy/test-engine/setup.sh as root."
        if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        client.images.get(TEST_IMAGE)
    except Exception:
        message = (
            f"The Docker engine answers but the test image {TEST_IMAGE} is missing; "
            "build it (offline, from Debian packages) with deploy/test-engine/setup.sh as root."
        )
        if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return client


@pytest.fixture
def docker_scope(settings, docker_client):
    """A label scope and name prefix of this test's own, so it never touches another
    run's containers; everything under the scope is removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    settings.CONTAINER_RUNTIME = "containers.runtime.DockerRuntime"
    settings.CONTAINER_SCOPE = f"aivc-test-{tag}"
    settings.CONTAINER_PREFIX = f"aivct{tag}-"
    network = settings.CONTAINER_NETWORK = f"aivct{tag}-net"
    yield settings.CONTAINER_SCOPE
    for container in docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_MANAGED}={settings.CONTAINER_SCOPE}"}
    ):
        container.remove(force=True)
    # The name filter matches substrings: remove only this test's own network.
    for found in docker_client.networks.list(names=[network]):
        if found.name == network:
            found.remove()


@pytest.fixture
def test_image(db):
    return ImageFactory(reference=TEST_IMAGE, is_default=True)


@pytest.fixture
def lab_image(db, docker_client, settings):
    """The lab image `make lab-image` builds (settings.LAB_IMAGE), registered with its modes.
    Missing: the test skips with the command that builds it, and fails under
    AIVC_REQUIRE_DOCKER=1 (CI builds it)."""
    try:
        docker_client.images.get(settings.LAB_IMAGE)
    except Exception:
        message = (
            f"The engine answers but the lab image {settings.LAB_IMAGE} is missing; "
            "build it with `make lab-image` (as root the first time, a few minutes)."
        )
        if os.environ.get("AIVC_REQUIRE_DOCKER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ImageFactory(reference=settings.LAB_IMAGE, lab_modes=True)


@pytest.fixture
def booking(db, engine_host, window, fake_runtime, default_profile):
    user = UserFactory(username="m11007s05", ssh_public_keys="ssh-ed25519 AAAAkey m11007s05@laptop\n")
    return ReservationFactory(
        user=user,
        host=engine_host,
        cpus=Decimal("2.5"),
        memory_gb=10,
        image=ImageFactory(reference="lab/aivc-server:latest"),
        extra_command="python -c 'print(1)'",
        gpus=[engine_host.gpus.get(index=1)],
        **window,
    )
