# The engine tests use the container tests' engine fixtures.
from tests.containers.conftest import (  # noqa: F401
    docker_client,
    docker_scope,
    fake_runtime,
    engine_host,
    roots,
    test_image,
    window,
)
