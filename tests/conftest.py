import os
import secrets

# The machine's own /etc/aivc-portal/env (a maintainer's) must never reach the processes the
# tests start (manage.py, gunicorn); a test of the file names its own.
os.environ["AIVC_ENV_FILE"] = ""

# A real-looking key: without DEBUG the settings refuse short or placeholder keys.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("STATICFILES_STORAGE", "django.contrib.staticfiles.storage.StaticFilesStorage")

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
def _fresh_cache():
    # API throttling counts in the cache; ids repeat between tests, counts must not.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
