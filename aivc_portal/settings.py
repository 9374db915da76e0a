"""One settings module for every environment; everything that differs comes from env vars."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from aivc_portal.clusters import SCHEDULER_CLUSTER, agent_cluster
from aivc_portal.env import (
    env_bool,
    env_cache,
    env_choice,
    env_dotted_path,
    env_file_text,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_range,
    env_str,
)
from aivc_portal.logs import LOG_FORMATS, formatter_for

BASE_DIR = Path(__file__).resolve().parent.parent


def secret_key_from_file(path: Path) -> str:
    """A random key kept in a root-only file, made on first use, so a fresh checkout runs
    with no setup and no key is ever committed or shared between installs."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


# Words that mark a key copied from an example rather than generated.
PLACEHOLDER_KEY_WORDS = ("change-me", "changeme", "change_me", "django-insecure", "placeholder", "example")


def refuse_weak_secret_key(key: str) -> None:
    """Without DEBUG the portal serves real sessions, and anyone who knows the key can forge
    them: a short or example key stops the start-up, naming the variable to fix."""
    if len(key) < 50 or len(set(key)) < 5 or any(word in key.lower() for word in PLACEHOLDER_KEY_WORDS):
        raise ImproperlyConfigured(
            "SECRET_KEY is too short or a placeholder (it needs 50 or more random characters). "
            "Generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))' and set "
            "SECRET_KEY in the environment (e.g. /etc/aivc-portal/env), or unset it to use a key "
            "generated into SECRET_KEY_FILE."
        )


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or secret_key_from_file(
    Path(os.environ.get("SECRET_KEY_FILE", BASE_DIR / "var" / "secret_key"))
)
if not DEBUG:
    refuse_weak_secret_key(SECRET_KEY)
# Former keys, still accepted for signed cookies while sessions move to a rotated key
# (docs/operations.md, "Rotate the secret key").
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SITE_NAME = os.environ.get("SITE_NAME", "AIVC Portal")

INSTALLED_APPS = [
    # The admin, with the lab's tables before the libraries' (issue 22).
    "aivc_portal.admin_site.LabAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # containers before django_q: its `qcluster` (the host agent when AIVC_HOST is set)
    # replaces django-q's own.
    "containers",
    "django_q",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "accounts",
    "bookings",
    "containers.telemetry",
    "jobs",
]

MIDDLEWARE = [
    # First: every later line of a request's log, and its access-log line, has its id.
    "aivc_portal.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "aivc_portal.middleware.RefuseNulCharacters",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The user's stored language (issue 22): after authentication, before the views.
    "accounts.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.ForcePasswordChangeMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "aivc_portal.urls"
WSGI_APPLICATION = "aivc_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "aivc_portal.context_processors.site",
                "accounts.context_processors.unread_notifications",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # A connection kept for a minute, checked before reuse: opening one per request (the
        # old default of 0) was a large share of a booking's time (docs/benchmarks.md).
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so the booking check and insert serialise.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests use a file too: an in-memory database has no WAL and fails concurrent writers
    # at once instead of letting them queue.
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

AUTHENTICATION_BACKENDS = [
    "accounts.backends.LoginThrottleBackend",  # first: refuses locked-out logins before hashing
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling (django-axes, accounts/throttling.py, docs/security.md "Logins"):
# LOGIN_FAILURE_LIMIT wrong passwords for one account from one address pause that pair for
# LOGIN_LOCKOUT_MINUTES (the owner still logs in from elsewhere); an address with
# LOGIN_ADDRESS_SLOW_AFTER failures is slowed (up to LOGIN_SLOW_MAX_SECONDS between an
# account's tries), never locked; LOGIN_FLOOD_THRESHOLD failures from one address or at one
# account tell the maintainers. Counts are kept in the database, shared by every worker.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
LOGIN_ADDRESS_SLOW_AFTER = env_int("LOGIN_ADDRESS_SLOW_AFTER", 10, minimum=1)
LOGIN_SLOW_MAX_SECONDS = env_int("LOGIN_SLOW_MAX_SECONDS", 60, minimum=1)
LOGIN_FLOOD_THRESHOLD = env_int("LOGIN_FLOOD_THRESHOLD", 30, minimum=1)
AXES_ENABLED = env_bool("LOGIN_THROTTLING", True)
AXES_HANDLER = "accounts.throttling.LabLoginHandler"
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_CALLABLE = "accounts.throttling.login_username"
AXES_CLIENT_IP_CALLABLE = "accounts.throttling.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.throttling.lockout_response"
# A success must not wipe the failures counted against an address: an attacker could
# otherwise log into her own account between guesses at someone else's.
AXES_RESET_ON_SUCCESS = False
# Attempts refused while locked are not recorded: each would otherwise lock and update one
# row (a flood queues on it), and an attacker could keep a student locked out for ever.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False

# Directory logins (django-auth-ldap, docs/ldap.md): off while LDAP_SERVER_URI is empty.
# python-ldap compiles against libldap, so it is in requirements-ldap.txt and imported only
# when a directory is named; the directory is asked after the throttle, before local passwords.
LDAP_SERVER_URI = env_str("LDAP_SERVER_URI", "")
if LDAP_SERVER_URI:
    from aivc_portal.directory_settings import directory_settings

    globals().update(
        directory_settings(
            server_uri=LDAP_SERVER_URI,
            bind_dn=env_str("LDAP_BIND_DN", ""),
            # A file keeps the password out of the process environment.
            bind_password=env_str("LDAP_BIND_PASSWORD", "") or env_file_text("LDAP_BIND_PASSWORD_FILE"),
            search_base=env_str("LDAP_USER_SEARCH_BASE", ""),
            user_filter=env_str("LDAP_USER_FILTER", "(uid=%(user)s)"),
            create_users=env_bool("LDAP_CREATE_USERS", False),
            start_tls=env_bool("LDAP_START_TLS", False),
            timeout=env_int("LDAP_TIMEOUT", 5, minimum=1),
        )
    )
    AUTHENTICATION_BACKENDS.insert(1, "accounts.directory.DirectoryBackend")

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hant", "繁體中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = os.environ.get("TIME_ZONE", "Asia/Taipei")
USE_TZ = True

STATIC_URL = "static/"
# deploy/install.sh keeps it in the state folder (/var/lib/aivc-portal/static), which the
# service's user may write; the code under /opt is root's.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", "").strip() or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": os.environ.get(
            "STATICFILES_STORAGE",
            "whitenoise.storage.CompressedManifestStaticFilesStorage",
        )
    },
}

SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Session storage: a one-time password shown to a maintainer never travels in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HTTPS only, for a portal served over TLS (deploy/env.example turns these on). The redirect
# trusts X-Forwarded-Proto only with BEHIND_TLS_PROXY, so it cannot loop behind nginx.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

# Monitoring (docs/monitoring.md): /healthz answers anyone; /metrics answers loopback, the
# networks listed here, and requests bearing the token. A probe on the server itself asks
# gunicorn over plain HTTP, so neither path is redirected to HTTPS.
METRICS_ALLOWED_ADDRESSES = env_networks("METRICS_ALLOWED_ADDRESSES", "")
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "").strip()
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN is too short: use 32 or more random characters, or unset it.")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

# Portal settings
PORT_RANGE = env_range("PORT_RANGE", "10001-11000")
CONTAINER_RUNTIME = os.environ.get("CONTAINER_RUNTIME", "containers.runtime.DockerRuntime")
CONTAINER_PREFIX = os.environ.get("CONTAINER_PREFIX", "aivc-")
# Value of the `aivc.managed` label: the portal only lists and removes containers carrying
# its own scope, so two portals (or test runs) can share an engine.
CONTAINER_SCOPE = os.environ.get("CONTAINER_SCOPE", "aivc")
CONTAINER_MAX_RESTARTS = env_int("CONTAINER_MAX_RESTARTS", 3)
# Disk (docs/security.md): the portal's own files on a GPU server (authorized_keys, SSH host
# keys), 0700, mounted by no container except these files, read-only. Never on a filesystem
# a student can fill: a launch is refused with an event when it shares one with the work,
# backup or home root, unless CONTAINER_STATE_SHARED_FS_OK (by default with DEBUG: the
# demo keeps everything under var/).
# Production: /var/lib/aivc-portal/container-state (deploy/install.sh sets it).
CONTAINER_STATE_ROOT = Path(
    os.environ.get("CONTAINER_STATE_ROOT", "").strip() or BASE_DIR / "var" / "container-state"
)
CONTAINER_STATE_SHARED_FS_OK = env_bool("CONTAINER_STATE_SHARED_FS_OK", DEBUG)
# Container hardening (docs/security.md): every capability is dropped, then these added back;
# the defaults are what sshd (with privilege separation) and common ML tooling need.
CONTAINER_CAP_ADD = env_list(
    "CONTAINER_CAP_ADD",
    "CHOWN,DAC_OVERRIDE,FOWNER,KILL,SETUID,SETGID,SYS_CHROOT,NET_BIND_SERVICE,AUDIT_WRITE",
)
CONTAINER_NO_NEW_PRIVILEGES = env_bool("CONTAINER_NO_NEW_PRIVILEGES", True)
CONTAINER_PIDS_LIMIT = env_int("CONTAINER_PIDS_LIMIT", 4096)
CONTAINER_NOFILE_LIMIT = env_int("CONTAINER_NOFILE_LIMIT", 16384)
CONTAINER_NPROC_LIMIT = env_int("CONTAINER_NPROC_LIMIT", 4096)
CONTAINER_LOG_MAX_SIZE = os.environ.get("CONTAINER_LOG_MAX_SIZE", "10m")
CONTAINER_LOG_MAX_FILES = env_int("CONTAINER_LOG_MAX_FILES", 3)
# A bridge network with inter-container traffic off; blank: Docker's default bridge.
CONTAINER_NETWORK = os.environ.get("CONTAINER_NETWORK", "aivc-isolated")
# JupyterLab through the portal (docs/jupyter.md): in production nginx serves /r/<pk>/lab/;
# `make run` starts `manage.py lab_proxy` on this port and the portal sends the lab's owner
# there (0: no such proxy, the portal itself never serves JupyterLab).
LAB_PROXY_PORT = env_int("LAB_PROXY_PORT", 0, minimum=0)
SPACE_AUDIT_MINUTES = env_int("SPACE_AUDIT_MINUTES", 15)
SPACE_AUDIT_TIMEOUT = env_int("SPACE_AUDIT_TIMEOUT", 600)
# The student's environment (docs/containers.md): where the persistent homes live (blank:
# <backup_root>/.aivc-home), whether containers are pinned to their booked number of CPUs
# (off: only the thread-count variables), and the largest file uploaded from the browser.
CONTAINER_HOME_ROOT = os.environ.get("CONTAINER_HOME_ROOT", "")
CONTAINER_CPUSET = env_bool("CONTAINER_CPUSET", True)
FILES_UPLOAD_MAX_MB = env_int("FILES_UPLOAD_MAX_MB", 100, minimum=1)
# On: the hosts' work roots are one shared storage mounted at the same path on the portal's
# machine, so the web process serves files of hosts that run their own agent too.
FILES_SHARED_WORK_ROOT = env_bool("FILES_SHARED_WORK_ROOT", False)
# GPU telemetry: the Host whose GPUs NVML sees here (blank: the one named like this machine,
# or the only one), where host processes are listed, and the idle rules.
GPU_HOST_NAME = os.environ.get("GPU_HOST_NAME", "")
GPU_PROC_ROOT = os.environ.get("GPU_PROC_ROOT", "/proc")
# What reads this machine's GPUs: NVML itself; the tests give each agent process a stand-in.
GPU_PROBE = env_dotted_path("GPU_PROBE", "containers.gpus.NvmlProbe")
GPU_SAMPLE_RETENTION_DAYS = env_int("GPU_SAMPLE_RETENTION_DAYS", 30)
GPU_IDLE_UTILISATION_PERCENT = env_int("GPU_IDLE_UTILISATION_PERCENT", 5)
GPU_IDLE_MINUTES = env_int("GPU_IDLE_MINUTES", 60)
GPU_IDLE_AUTO_RELEASE = env_bool("GPU_IDLE_AUTO_RELEASE", False)
GPU_IDLE_RELEASE_GRACE_MINUTES = env_int("GPU_IDLE_RELEASE_GRACE_MINUTES", 60)
# Batch jobs: the lab's limits (a profile may lower them), fair share, and the logs, kept in
# a portal-owned folder that no container mounts.
JOB_MAX_TIME_LIMIT_MINUTES = env_int("JOB_MAX_TIME_LIMIT_MINUTES", 3 * 24 * 60)
JOB_MAX_QUEUED = env_int("JOB_MAX_QUEUED", 20)
JOB_STOP_GRACE_S = env_int("JOB_STOP_GRACE_S", 30)
JOB_LOG_ROOT = Path(os.environ.get("JOB_LOG_ROOT", BASE_DIR / "var" / "job-logs"))
JOB_LOG_MAX_BYTES = env_int("JOB_LOG_MAX_BYTES", 10 * 1024 * 1024)
JOB_LOG_TAIL_LINES = env_int("JOB_LOG_TAIL_LINES", 200)
# DoPQ zip uploads: a student's Dockerfile is built on the host's engine. Off by default: a
# build runs the student's RUN steps as root on the GPU server's engine (with its network),
# which a lab turns on deliberately. The limits keep one upload from filling the disk or
# holding the agent.
JOB_BUILDS_ALLOWED = env_bool("JOB_BUILDS_ALLOWED", False)
JOB_UPLOAD_MAX_BYTES = env_int("JOB_UPLOAD_MAX_BYTES", 20 * 1024 * 1024)
JOB_UPLOAD_MAX_UNPACKED_BYTES = env_int("JOB_UPLOAD_MAX_UNPACKED_BYTES", 100 * 1024 * 1024)
JOB_UPLOAD_MAX_FILES = env_int("JOB_UPLOAD_MAX_FILES", 1000)
JOB_BUILD_TIMEOUT_S = env_int("JOB_BUILD_TIMEOUT_S", 15 * 60)
# Usage limits (bookings/limits.py): the longest unbroken hold on a GPU by one user, bookings
# back to back counted as one (0: no limit). Caps at once and budgets are per profile.
MAX_CONTINUOUS_GPU_HOLD_HOURS = env_int("MAX_CONTINUOUS_GPU_HOLD_HOURS", 14 * 24, minimum=0)
# The build fence (issue 21): the images a Dockerfile may use beside the lab's active Image
# list and the user's own builds; no network (a lab that needs pip names a proxy, which
# gives RUN steps the engine's network); CPU and pids limits (the pids limit sits on a
# parent cgroup the install makes); the uploaded context on disk, capped per user; built
# images removed when unused or when the engine's disk runs low.
JOB_BUILD_BASE_IMAGES = env_list("JOB_BUILD_BASE_IMAGES", "")
JOB_BUILD_NETWORK = env_str("JOB_BUILD_NETWORK", "none")
JOB_BUILD_PROXY = env_str("JOB_BUILD_PROXY", "")
JOB_BUILD_CPUS = env_float("JOB_BUILD_CPUS", 2, minimum=0.01)
JOB_BUILD_CGROUP_PARENT = env_str("JOB_BUILD_CGROUP_PARENT", "aivc-build")
JOB_BUILD_PIDS_LIMIT = env_int("JOB_BUILD_PIDS_LIMIT", 512, minimum=0)
JOB_UPLOAD_MAX_RATIO = env_int("JOB_UPLOAD_MAX_RATIO", 100, minimum=1)
JOB_BUILD_CONTEXT_ROOT = Path(os.environ.get("JOB_BUILD_CONTEXT_ROOT") or BASE_DIR / "var" / "build-contexts")
JOB_BUILD_CONTEXT_MAX_BYTES_PER_USER = env_int("JOB_BUILD_CONTEXT_MAX_BYTES_PER_USER", 200 * 1024 * 1024)
JOB_BUILD_IMAGE_KEEP_DAYS = env_int("JOB_BUILD_IMAGE_KEEP_DAYS", 14, minimum=1)
JOB_BUILD_MIN_FREE_GB = env_int("JOB_BUILD_MIN_FREE_GB", 20, minimum=0)
FAIR_SHARE_HALF_LIFE_DAYS = env_float("FAIR_SHARE_HALF_LIFE_DAYS", 7)
# 0-GPU work is charged in CPU-hours; this many CPU-hours weigh as much as one GPU-hour.
FAIR_SHARE_CPU_HOURS_PER_GPU_HOUR = env_float("FAIR_SHARE_CPU_HOURS_PER_GPU_HOUR", 8)

# A GPU server's agent: `AIVC_HOST=<host name> manage.py qcluster` serves only that host,
# from the cluster named after it. Unset: one scheduler serves every host that has no
# agent of its own (a one-server lab) and runs the central tasks.
AIVC_HOST = os.environ.get("AIVC_HOST", "").strip()
AGENT_HEARTBEAT_SECONDS = env_int("AGENT_HEARTBEAT_SECONDS", 30)
# Threads one agent launches containers with at once.
AGENT_LAUNCH_WORKERS = env_int("AGENT_LAUNCH_WORKERS", 8)

# The lab image (issue 19, deploy/images): what `make lab-image` builds and `make run`
# registers as the default image on a machine whose engine holds no lab image yet.
LAB_IMAGE = os.environ.get("AIVC_LAB_IMAGE", "aivc/lab:cpu").strip()

Q_CLUSTER = {
    "name": SCHEDULER_CLUSTER,
    "orm": "default",
    # The exact-time waker holds one worker while a start or end is near; space audits
    # can hold others for minutes, so reconcile ticks need more than two.
    "workers": env_int("Q_WORKERS", 4),
    "timeout": env_int("Q_TIMEOUT", 900),
    "retry": env_int("Q_RETRY", 1200),
    "max_attempts": 1,
    "catch_up": False,
    "poll": env_float("Q_POLL", 0.5),
    "sync": env_bool("Q_SYNC", False),
    "ack_failures": True,
    "save_limit": 500,
    "label": "Scheduler",
}
if AIVC_HOST:
    Q_CLUSTER["cluster_name"] = agent_cluster(AIVC_HOST)
# Large labs: Redis as the task broker instead of the database (pip install redis).
if os.environ.get("Q_REDIS_URL"):
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = os.environ["Q_REDIS_URL"]

# Logs (docs/monitoring.md): every line starts with its UTC time (ISO 8601); LOG_FORMAT=json
# writes one JSON object per line. gunicorn's lines use the same format (its config reads
# LOG_FORMAT too).
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", LOG_FORMATS)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"portal": formatter_for(LOG_FORMAT)},
    "filters": {
        "forbidden_without_traceback": {"()": "aivc_portal.log_filters.ForbiddenWithoutTraceback"},
        "request_context": {"()": "aivc_portal.logs.RequestContext"},
        "redact_secrets": {"()": "aivc_portal.logs.RedactSecrets"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "portal",
            "filters": ["forbidden_without_traceback", "request_context", "redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own console handler would print every django.* line a second time
        # beside the root's; the root handler alone writes them.
        "django": {"handlers": [], "level": "INFO"},
    },
}

# The cache (docs/monitoring.md): API throttle counts live here, so every gunicorn worker
# must see the same one. The database table by default; Redis when CACHE_URL (or REDIS_URL)
# names one.
CACHES = {"default": env_cache("CACHE_URL", "REDIS_URL")}

# JSON API (docs/api.md): session auth for the browser, personal access tokens for scripts.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "aivc_portal.api.Pagination",
    "DEFAULT_THROTTLE_CLASSES": ["aivc_portal.api.PerTokenThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": os.environ.get("API_THROTTLE_RATE", "120/min"),
        "token_login": os.environ.get("API_LOGIN_THROTTLE_RATE", "10/min"),
    },
    "EXCEPTION_HANDLER": "aivc_portal.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "aivc_portal.api_schema.ApiSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AIVC Portal API",
    "DESCRIPTION": "Book GPU servers, manage reservations and batch jobs. See docs/api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Requests for more (docs/limits.md): their `kind` is not the reservations' `kind`.
    "ENUM_NAME_OVERRIDES": {"LimitKindEnum": "accounts.models.LimitKind"},
}
API_TOKEN_MAX_DAYS = env_int("API_TOKEN_MAX_DAYS", 365, minimum=1)
# A token made without an expiry (the profile page, `aivc login`) expires after this many days.
API_TOKEN_DEFAULT_DAYS = min(env_int("API_TOKEN_DEFAULT_DAYS", 90, minimum=1), API_TOKEN_MAX_DAYS)

# Notifications (accounts/notifications.py): e-mail through Django's backend, console by default.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "aivc-portal@localhost")
# Absolute base of links in e-mails and the calendar feed, e.g. https://portal.lab.example
PORTAL_URL = os.environ.get("PORTAL_URL", "http://127.0.0.1:8000").rstrip("/")
NOTIFY_ENDING_MINUTES = env_int("NOTIFY_ENDING_MINUTES", 30)
NOTIFY_LOOKBACK_HOURS = env_int("NOTIFY_LOOKBACK_HOURS", 24)
# Job notices: "near its time limit" this many minutes before it (0: never).
JOB_NEAR_LIMIT_MINUTES = env_int("JOB_NEAR_LIMIT_MINUTES", 10, minimum=0)
