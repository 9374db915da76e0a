"""How log lines look, for Django (settings.LOGGING) and gunicorn (deploy/gunicorn.conf.py)
alike: every line starts with its time in UTC, ISO 8601; LOG_FORMAT=json makes each line one
JSON object instead. Lines written while a request is served carry its request id and, once
the request is authenticated, the username (aivc_portal.middleware sets them).

Imported by gunicorn's master before Django is set up: nothing here reads settings."""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

from django.utils.functional import empty

LOG_FORMATS = ("plain", "json")

# The request being served by this thread, for the lines it logs; set by the middleware,
# cleared when the response is finished.
current_request: ContextVar[object | None] = ContextVar("current_request", default=None)


# The calendar feed's secret is the last part of its URL path (bookings/urls.py), so every
# path a log line might carry goes through `redact`: gunicorn's access line, Django's
# "Not Found: /calendar/..." warning, runserver's request line.
SECRET_IN_PATH = re.compile(r"(/calendar/)[^/\s?\"']+(\.ics)")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with every secret a URL path can hold replaced by [redacted]."""
    return SECRET_IN_PATH.sub(rf"\g<1>{REDACTED}\g<2>", text) if "/calendar/" in text else text


def _redacted(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Redacts URL secrets in a record's message and arguments before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):  # gunicorn's access atoms
            record.args = {key: _redacted(arg) for key, arg in record.args.items()}
        return True


def utc_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def known_username(request: object) -> str:
    """The username if the request's user is already known; never a database read (a log
    line must not cost a query, nor fail when the database is what is down)."""
    user = getattr(request, "__dict__", {}).get("user")  # absent before authentication
    if user is None:
        return ""
    if getattr(user, "_wrapped", None) is empty:  # the session's user, not loaded yet
        return ""
    return user.get_username() if getattr(user, "is_authenticated", False) else ""


class RequestContext(logging.Filter):
    """Adds `request_id` and `user` to every record ('' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django's own request lines name their request (its 4xx/5xx line is written after
        # the middleware has returned); other lines get the one being served.
        request = getattr(record, "request", None) or current_request.get()
        meta = getattr(request, "META", {})
        record.request_id = meta.get("aivc.request_id", "")
        record.user = known_username(request) if request is not None else ""
        return True


class PlainFormatter(logging.Formatter):
    """`2026-03-02T02:10:00.123+00:00 INFO logger: message`, request id and user appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_time(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={value}"
            for key in ("request_id", "user")
            if (value := getattr(record, key, "")) and record.name != "gunicorn.access"
        )
        if not context:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{context}]{newline}{rest}"


# gunicorn's access atoms kept as fields of a JSON access line (the rest of the atoms hold
# every request header, which may carry cookies and tokens: never logged).
ACCESS_FIELDS = {
    "{aivc.client}e": "client",
    "{aivc.user}e": "user",
    "{aivc.request_id}e": "request_id",
    "m": "method",
    "U": "path",
    "s": "status",
    "B": "bytes",
    "L": "duration_s",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and user where
    known, the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            for atom, field in ACCESS_FIELDS.items():
                value = record.args.get(atom)
                if value not in (None, "-"):
                    entry[field] = value
        for key in ("request_id", "user"):
            if (value := getattr(record, key, "")) and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> dict[str, str]:
    """A dictConfig formatter entry for LOG_FORMAT."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}.")
    return {"()": f"aivc_portal.logs.{'Json' if log_format == 'json' else 'Plain'}Formatter"}


def gunicorn_logging(log_format: str) -> dict:
    """gunicorn's logconfig_dict: its error lines to stderr, access lines to stdout, both in
    the portal's format; neither propagates, so no line is written twice."""
    handler = {"class": "logging.StreamHandler", "formatter": "portal", "filters": ["redact_secrets"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"portal": formatter_for(log_format)},
        # Every atom of an access line (path, request line, referer, environ) is redacted.
        "filters": {"redact_secrets": {"()": "aivc_portal.logs.RedactSecrets"}},
        "handlers": {
            "access": {**handler, "stream": "ext://sys.stdout"},
            "error": {**handler, "stream": "ext://sys.stderr"},
            "console": {**handler, "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }
