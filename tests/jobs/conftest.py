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


def builds_fenced(settings, tmp_path, *, pids_limit: int = 0) -> None:
    """DoPQ builds on, as the upload tests need them: the offline test image allow-listed,
    contexts and logs in the test's folder, and (unless a test asks for it) no pids fence,
    whose parent cgroup only a real engine test makes."""
    from tests.images import TEST_IMAGE

    settings.JOB_BUILDS_ALLOWED = True
    settings.JOB_LOG_ROOT = tmp_path / "job-logs"
    settings.JOB_BUILD_CONTEXT_ROOT = tmp_path / "build-contexts"
    settings.JOB_BUILD_BASE_IMAGES = [TEST_IMAGE]
    settings.JOB_BUILD_PIDS_LIMIT = pids_limit
    settings.JOB_BUILD_NETWORK = "none"
    settings.JOB_BUILD_PROXY = ""
    settings.JOB_BUILD_MIN_FREE_GB = 0
