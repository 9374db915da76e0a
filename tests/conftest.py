import os
from pathlib import Path

import pytest

from tests.factories import (
    CapabilityProfileFactory,
    HostFactory,
    ImageFactory,
    UserFactory,
    local,
)


@pytest.fixture(autouse=True)
def _fast_password_hasher(request, settings):
    # Argon2 costs ~0.3 s a hash; tests that are about hashing mark themselves `argon2`.
    if "argon2" not in request.keywords:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # Tests render templates without running collectstatic first.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


# Monday 2026-03-02 10:10 in Taipei: every booking test runs against this clock.
NOW = local(2026, 3, 2, 10, 10)


@pytest.fixture(autouse=True)
def _no_listening_ports_here(request, monkeypatch):
    # Which ports listen on this machine changes under the tests (real-engine tests publish
    # forward ports), so port allocation sees none; a test about them asks for the real ones.
    if "listening_ports_here" not in request.fixturenames:
        monkeypatch.setattr("accounts.selectors.ports_listening_here", set)


@pytest.fixture(autouse=True)
def _container_state_root(settings, tmp_path_factory, monkeypatch):
    # Each test its own state folder; on this machine it shares a filesystem with the test
    # roots, which the launch refuses unless allowed (a test about it sets it back). The
    # environment too: ticks and agents the tests start as processes read it.
    settings.CONTAINER_STATE_ROOT = tmp_path_factory.mktemp("container-state")
    settings.CONTAINER_STATE_SHARED_FS_OK = True
    monkeypatch.setenv("CONTAINER_STATE_ROOT", str(settings.CONTAINER_STATE_ROOT))
    monkeypatch.setenv("CONTAINER_STATE_SHARED_FS_OK", "1")


@pytest.fixture
def listening_ports_here():
    """The allocator sees what really listens on this machine (/proc/net/tcp)."""


@pytest.fixture
def now():
    return NOW


@pytest.fixture
def host(db):
    return HostFactory(name="gpu-01", cpus=16, ram_gb=64, swap_gb=16, gpus=2)


@pytest.fixture
def image(db):
    return ImageFactory(reference="lab/aivc-server:latest", is_default=True)


@pytest.fixture
def default_profile(db):
    return CapabilityProfileFactory(
        name="student",
        is_default=True,
        cpus=8,
        memory_gb=32,
        gpus=1,
        work_space_gb=200,
        backup_space_gb=50,
    )


@pytest.fixture
def student(db, default_profile, image):
    return UserFactory(username="m11007s05")


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    # API throttling counts in the cache; ids repeat between tests, counts must not. One
    # process here, so the memory cache; the shared database cache and Redis have their own
    # tests with real gunicorn workers (tests/deploy/test_shared_throttle.py).
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    # Two runs in one checkout (a maintainer's and an editor's) each get their own SQLite
    # test file instead of deleting the other's halfway through.
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = Path(database["TEST"]["NAME"])
        database["TEST"]["NAME"] = str(name.with_name(f"{name.stem}-{os.getpid()}{name.suffix}"))
