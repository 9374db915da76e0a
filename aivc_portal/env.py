"""Strict readers of the environment for settings.py. A value that cannot be what the
setting needs stops start-up with ImproperlyConfigured naming the variable, instead of
quietly becoming a default (`DEBUG=ture` used to mean False). An unset or empty variable
takes the default."""

import importlib.util
import ipaddress
import os
import re

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _raw(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _wrong(name: str, value: str, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"Environment variable {name}={value!r} is not {expected}.")


def env_str(name: str, default: str) -> str:
    return _raw(name) or default


def env_file_text(name: str) -> str:
    """The stripped text of the file the variable names (a secret kept out of the
    environment); empty when unset. An unreadable file stops start-up naming the variable and
    the path, never the content."""
    path = _raw(name)
    if path is None:
        return ""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise ImproperlyConfigured(f"Environment variable {name}: cannot read {path!r} ({reason}).") from None


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise _wrong(name, value, "a boolean (true/false, yes/no, on/off, 1/0)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise _wrong(name, value, "a whole number") from None
    if minimum is not None and number < minimum:
        raise _wrong(name, value, f"a whole number of at least {minimum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise _wrong(name, value, "a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _wrong(name, value, "a finite number")
    if minimum is not None and number < minimum:
        raise _wrong(name, value, f"a number of at least {minimum}")
    return number


_DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or default).lower()
    if value not in choices:
        raise _wrong(name, value, f"one of {', '.join(choices)}")
    return value


def env_dotted_path(name: str, default: str) -> str:
    """A dotted Python path (`package.module.Name`); whether it imports is checked where
    it is used, since importing here would load the app modules before Django is set up."""
    value = _raw(name)
    if value is None:
        return default
    if not _DOTTED_PATH.fullmatch(value):
        raise _wrong(name, value, "a dotted Python path like package.module.ClassName")
    return value


def env_list(name: str, default: str) -> list[str]:
    """Comma-separated items; blanks between commas are dropped."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_range(name: str, default: str) -> range:
    """`low-high`, both ends included, low <= high."""
    value = _raw(name) or default
    low, separator, high = value.partition("-")
    try:
        if not separator:
            raise ValueError
        bounds = int(low), int(high)
    except ValueError:
        raise _wrong(name, value, "a range like 10001-11000") from None
    if bounds[0] > bounds[1] or bounds[0] < 0:
        raise _wrong(name, value, "a range with 0 <= low <= high")
    return range(bounds[0], bounds[1] + 1)


def env_networks(name: str, default: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDR networks (`10.0.0.5, 192.168.1.0/24, fd00::/8`)."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _wrong(name, item, "an IP address or network like 192.168.1.0/24") from None
    return tuple(networks)


# The database cache's table: made by a migration (accounts 0007), named in CACHES.
DATABASE_CACHE_TABLE = "aivc_cache"
_CACHE_BACKENDS = {
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
    "dummy": "django.core.cache.backends.dummy.DummyCache",
}


def env_cache(*names: str) -> dict[str, object]:
    """The default cache from the first of `names` that is set: `redis://` or `rediss://`
    (Django's Redis backend), `db://` or unset (the database table), `locmem://` or
    `dummy://` (one process only: tests and development)."""
    name, value = next(((name, _raw(name)) for name in names if _raw(name)), (names[0], None))
    scheme = (value or "db://").partition("://")[0].lower()
    if scheme == "db":
        # Throttle counts are a few rows per client; the default of 300 entries would cull
        # (forget) counts on a busy portal.
        return {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": DATABASE_CACHE_TABLE,
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    if scheme in ("redis", "rediss", "unix"):
        if importlib.util.find_spec("redis") is None:
            raise ImproperlyConfigured(f"{name} names Redis, but the redis package is not installed.")
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": value}
    if scheme in _CACHE_BACKENDS:
        return {"BACKEND": _CACHE_BACKENDS[scheme]}
    shown = value.split("@")[-1]  # never print a password written into the URL
    raise _wrong(name, shown, "a cache URL: redis://host:6379/0, db://, locmem:// or dummy://")
