"""Where the client keeps the portal URL and the token: a JSON file readable by its owner
only (0600), at $AIVC_CONFIG or ~/.config/aivc/config.json."""

import json
import os
from pathlib import Path


def config_path() -> Path:
    explicit = os.environ.get("AIVC_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "aivc" / "config.json"


def load() -> dict:
    path = config_path()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}


def save(data: dict) -> Path:
    """Writes the file so that it is never readable by others, not even for a moment:
    created 0600, and tightened if it already existed."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(data, handle, indent=2)
    return path


def forget() -> None:
    path = config_path()
    data = load()
    data.pop("token", None)
    data.pop("token_id", None)
    if path.exists():
        save(data)
