"""The service's configuration file, read by every entry point (manage.py, wsgi, asgi,
gunicorn's config), so a maintainer's `manage.py createsuperuser` lands in the same
database as the web server's requests.

The file is `AIVC_ENV_FILE` (default `/etc/aivc-portal/env` when it exists; set to the empty
string for none). Variables already in the environment win over the file: systemd's
`Environment=AIVC_HOST=%i` and one-off `LOG_LEVEL=DEBUG aivc-manage ...` keep working.

settings.py itself reads only the process environment, so the test suite, which imports the
settings directly, never sees a file on the machine it runs on.
"""

import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from aivc_portal.env import env_bool

DEFAULT_ENV_FILE = Path("/etc/aivc-portal/env")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_file_path() -> Path | None:
    """The file to read, or None: `AIVC_ENV_FILE` when set (empty: none), else the default
    when it exists."""
    named = os.environ.get("AIVC_ENV_FILE")
    if named is None:
        return DEFAULT_ENV_FILE if DEFAULT_ENV_FILE.exists() else None
    named = named.strip()
    return Path(named) if named else None


def parse_env_file(text: str, *, path: Path) -> dict[str, str]:
    """`NAME=value` lines, as systemd's EnvironmentFile= reads them for the simple cases:
    blank lines and lines starting with `#` or `;` are skipped, a value wrapped whole in
    single or double quotes loses them. Anything else is refused with its line number, so a
    typo never silently drops a setting."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, separator, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not separator or not _NAME.fullmatch(name):
            raise ImproperlyConfigured(f"{path}, line {number}: expected NAME=value.")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def load_env_file() -> Path | None:
    """Puts the file's variables into os.environ (those already set are kept) and returns
    the file read, if any. A named file that is missing or unreadable stops the start-up
    with its name: falling back to defaults would mean a silent SQLite file."""
    path = env_file_path()
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImproperlyConfigured(
            f"The configuration file {path} (AIVC_ENV_FILE) does not exist. "
            "Create it from deploy/env.example, or set AIVC_ENV_FILE= to read none."
        ) from None
    except PermissionError:
        raise ImproperlyConfigured(
            f"The configuration file {path} cannot be read by this user (permission denied): "
            "run the command as root or through aivc-manage, which runs it as the service's user."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ImproperlyConfigured(f"The configuration file {path} cannot be read: {error}.") from None
    for name, value in parse_env_file(text, path=path).items():
        os.environ.setdefault(name, value)
    return path


def require_database_url() -> None:
    """Without DEBUG the portal is a service: its database must be named, never the SQLite
    file a fresh checkout would create beside the code."""
    if not env_bool("DEBUG", False) and not os.environ.get("DATABASE_URL", "").strip():
        raise ImproperlyConfigured(
            "DATABASE_URL is not set and DEBUG is off: set DATABASE_URL (e.g. postgres:///aivc) in "
            f"{env_file_path() or DEFAULT_ENV_FILE} or the environment (DEBUG=1 runs on SQLite "
            "for development)."
        )


def prepare_service_environment() -> None:
    """What each entry point does before Django loads the settings."""
    load_env_file()
    require_database_url()
