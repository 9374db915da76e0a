"""The test run's environment: what a maintainer exported must not change a result.

Every variable the settings read is dropped before Django loads them, so each test sees
the documented defaults and pins what it relies on. Only the variables that tell the
harness where its own services are (the database, the second engine, what CI requires)
are kept."""

import os
import re
from pathlib import Path

SETTINGS_SOURCES = ("aivc_portal/settings.py",)

# Where the harness's own services are, and what CI asks of it: never a portal setting.
HARNESS_VARIABLES = frozenset(
    {
        "DATABASE_URL",
        "DJANGO_SETTINGS_MODULE",
        "DOCKER_HOST",
        "AIVC_TEST_ENGINE2",
        "AIVC_DESTRUCTIVE_ENGINE_TESTS",
    }
)
HARNESS_PREFIXES = ("AIVC_REQUIRE_", "AIVC_TEST_", "AIVC_SSHD_")

# The arguments of an environment reader: os.environ.get("X", ...), env_int("X", ...),
# env_cache("X", "Y") and the like; every quoted upper-case name in them is a variable.
_READER_CALL = re.compile(r"(?:environ\.get|getenv|env_[a-z_]+)\(([^()]*)\)")
_NAME = re.compile(r"""["']([A-Z][A-Z0-9_]*)["']""")


def portal_variables(root: Path) -> set[str]:
    names: set[str] = set()
    for source in SETTINGS_SOURCES:
        for arguments in _READER_CALL.findall((root / source).read_text(encoding="utf-8")):
            names.update(_NAME.findall(arguments))
    return names


def is_harness_variable(name: str) -> bool:
    return name in HARNESS_VARIABLES or name.startswith(HARNESS_PREFIXES)


def drop_portal_settings(root: Path, environ: os._Environ | dict = os.environ) -> list[str]:
    dropped = sorted(
        name for name in portal_variables(root) if name in environ and not is_harness_variable(name)
    )
    for name in dropped:
        del environ[name]
    return dropped
