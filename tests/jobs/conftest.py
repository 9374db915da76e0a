# The engine tests use the container tests' engine fixtures.
from tests.containers.conftest import (  # noqa: F401
    docker_client,
    docker_scope,
    engine_host,
    fake_runtime,
    lab_image,
    roots,
    test_image,
    window,
)
