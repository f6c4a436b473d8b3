"""reportsvc settings: everything comes from the environment (django-environ).

With nothing set the service runs on a SQLite file under ``var/`` and writes report
outputs under ``var/outputs/``. Every variable is listed in README.md and .env.example.
"""

import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from datasources.registry import alias_for_source, login_aliases_by_source, reporting_databases
from reportsvc.networks import DEFAULT_BLOCKED_NETWORKS, parse_networks
from reportsvc.object_storage import check_s3_options, filesystem_storages, s3_storages
from reportsvc.reminders import DEFAULT_REPEAT_AFTER, parse_repeat_after

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

VAR_DIR = Path(env("REPORTSVC_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # SQLite cannot create a file in a missing folder

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (or .env), or set DEBUG=1 "
            "for local development."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS, for production behind a TLS-terminating proxy (see README, Production).
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Container health checks, and Prometheus scraping the container, speak plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_apscheduler",
    "axes",
    "csp",
    "simple_history",
    "access",
    "reports",
    "runs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who changed a report, for changes no view names explicitly (a delete, say).
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "reportsvc.web.escaping.EscapeUnencodableTextMiddleware",
    "reportsvc.middleware.APIRequestLogMiddleware",
    "reportsvc.middleware.APIRequestBodyLimitMiddleware",
    # Last, as django-axes asks: it turns a refused login into the "login paused" page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "reportsvc.urls"

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
            ],
        },
    },
]

WSGI_APPLICATION = "reportsvc.wsgi.application"

# --- Databases -------------------------------------------------------------------------

DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'reportsvc.sqlite3'}"
DATABASE_URL = env("DATABASE_URL", default=DEFAULT_DATABASE_URL)


# Persistent connections, checked before each request / unit of worker work.
DATABASE_CONN_MAX_AGE = env.int("DATABASE_CONN_MAX_AGE", default=60)


# A peer that vanished (a host gone, a cut network) ends a service-database connection
# within seconds, on both ends: libpq's keepalives and user timeout on the client, the
# same settings of the session on the server (tcp_keepalives_*, tcp_user_timeout).
# Without them a dead peer's session, and its locks, lived for the kernel's two hours.
# DATABASE_URL's query parameters (e.g. ?keepalives_idle=30) override the client's.
SERVICE_DATABASE_TCP = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms: data sent and not acknowledged for this long
}
SERVICE_DATABASE_SERVER_TCP = (
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
    "-c tcp_user_timeout=10000"
)


def _service_database(url):
    config = environ.Env.db_url_config(url)
    config.setdefault("OPTIONS", {})
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"].endswith("postgresql"):
        for option, value in SERVICE_DATABASE_TCP.items():
            config["OPTIONS"].setdefault(option, value)
        # Ours first: a URL's own ?options=-c … come later and win.
        given = config["OPTIONS"].get("options", "")
        config["OPTIONS"]["options"] = f"{SERVICE_DATABASE_SERVER_TCP} {given}".strip()
    if config["ENGINE"].endswith("sqlite3"):
        # WAL lets report queries read while the service writes run bookkeeping;
        # IMMEDIATE avoids "database is locked" when two writers upgrade at once.
        config["OPTIONS"].setdefault("timeout", 20)
        config["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
        config["OPTIONS"].setdefault("init_command", "PRAGMA journal_mode=WAL;")
        # Tests run against a real SQLite file, not an in-memory database.
        config["TEST"] = {"NAME": str(VAR_DIR / "test-reportsvc.sqlite3")}
    return config


DATABASES = {"default": _service_database(DATABASE_URL)}
DATABASES.update(
    reporting_databases(os.environ, DATABASE_URL, DATABASES["default"], VAR_DIR, SECRET_KEY)
)
for _alias in DATABASES:
    DATABASES[_alias]["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
DATABASE_ROUTERS = ["datasources.registry.ReportingDatabaseRouter"]

# Data-source name -> the aliases of its logins (the URL's first); report SQL only ever
# runs through these, each run on a login it leases (README: Security).
REPORT_DATA_SOURCE_LOGINS = login_aliases_by_source(DATABASES)
# Data-source name -> the alias of its first login.
REPORT_DATA_SOURCES = {name: aliases[0] for name, aliases in REPORT_DATA_SOURCE_LOGINS.items()}
assert all(alias_for_source(name) == alias for name, alias in REPORT_DATA_SOURCES.items())

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One cache for every process (the run-trigger throttle counts in it). The default is a
# table in the service's database, created by `migrate`; e.g. redis://host:6379/0 with
# the `redis` package installed. A per-process cache (locmemcache://) would let each
# web process count on its own.
CACHES = {"default": env.cache_url("CACHE_URL", default="dbcache://reportsvc_cache")}

# --- Report execution ------------------------------------------------------------------

# Unset: the built-in demo source (README: Security), which cannot see the service's tables.
REPORTING_DATABASE_URL = env("REPORTING_DATABASE_URL", default="")
# Lets a data source connect as a superuser or a role with server-file, program,
# replication or signalling powers. Only for a throwaway local set-up.
UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES = env.bool(
    "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES", default=False
)

REPORT_TIMEOUT_SECONDS = env.int("REPORT_TIMEOUT_SECONDS", default=300)
REPORT_MAX_ROWS = env.int("REPORT_MAX_ROWS", default=10_000_000)
# Runs of one report that may wait in the queue; requests past it are refused (0: no cap).
REPORT_MAX_QUEUED_RUNS = env.int("REPORT_MAX_QUEUED_RUNS", default=10)
# Runs one backfill may queue, and backfilled runs of one report that may wait at once.
BACKFILL_MAX_RUNS = env.int("BACKFILL_MAX_RUNS", default=366)

# --- Auth, i18n, files ---------------------------------------------------------------

# django-axes first: it refuses a login while its username and address are locked out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# One date and time format across the admin: "2026-11-26 09:26:44 UTC".
FORMAT_MODULE_PATH = ["reportsvc.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# Report outputs. Never served from a public URL: only through authenticated views.
MEDIA_ROOT = env("OUTPUTS_DIR", default=str(VAR_DIR / "outputs"))

# Or in an S3-compatible bucket, when one is named (README: Outputs on object storage).
# The AWS_* names are django-storages' and boto3's own.
OUTPUTS_S3_BUCKET = env("OUTPUTS_S3_BUCKET", default="")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default="") or None
AWS_ACCESS_KEY_ID = env("AWS_ACCESS_KEY_ID", default="") or None
AWS_SECRET_ACCESS_KEY = env("AWS_SECRET_ACCESS_KEY", default="") or None
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default="") or None
AWS_S3_ADDRESSING_STYLE = env("AWS_S3_ADDRESSING_STYLE", default="") or None
OUTPUTS_S3_PREFIX = env("OUTPUTS_S3_PREFIX", default="outputs").strip("/")
OUTPUTS_S3_URL_EXPIRE_SECONDS = env.int("OUTPUTS_S3_URL_EXPIRE_SECONDS", default=60)
# Where browsers and API clients reach the storage, when not at AWS_S3_ENDPOINT_URL (a
# container network name): download URLs are signed for this address.
OUTPUTS_S3_PUBLIC_ENDPOINT_URL = (
    env("OUTPUTS_S3_PUBLIC_ENDPOINT_URL", default="") or AWS_S3_ENDPOINT_URL
)
# Housekeeping aborts unfinished uploads and deletes objects no run records, under the
# prefix, once they are this old: longer than the longest upload, short enough that with
# hourly housekeeping nothing stays a day (README: Outputs in object storage).
OUTPUTS_S3_CLEANUP_AFTER_SECONDS = env.int("OUTPUTS_S3_CLEANUP_AFTER_SECONDS", default=6 * 3600)
# Every request to the storage: seconds to connect, seconds per read, attempts.
OUTPUTS_S3_CONNECT_TIMEOUT_SECONDS = env.float("OUTPUTS_S3_CONNECT_TIMEOUT_SECONDS", default=5.0)
OUTPUTS_S3_READ_TIMEOUT_SECONDS = env.float("OUTPUTS_S3_READ_TIMEOUT_SECONDS", default=30.0)
OUTPUTS_S3_MAX_ATTEMPTS = env.int("OUTPUTS_S3_MAX_ATTEMPTS", default=3)
# What the web asks the storage while someone waits (the check before a download's
# redirect, the admin's preview): one attempt, this many seconds in all (at most 1 of
# them to connect), and at most this many such requests at once per web process; more
# are answered 503 at once.
OUTPUTS_S3_WEB_TIMEOUT_SECONDS = env.float("OUTPUTS_S3_WEB_TIMEOUT_SECONDS", default=3.0)
OUTPUTS_S3_WEB_CONCURRENCY = env.int("OUTPUTS_S3_WEB_CONCURRENCY", default=4)
if OUTPUTS_S3_BUCKET:
    _problem = check_s3_options(
        AWS_S3_ADDRESSING_STYLE,
        OUTPUTS_S3_URL_EXPIRE_SECONDS,
        OUTPUTS_S3_CONNECT_TIMEOUT_SECONDS=OUTPUTS_S3_CONNECT_TIMEOUT_SECONDS,
        OUTPUTS_S3_READ_TIMEOUT_SECONDS=OUTPUTS_S3_READ_TIMEOUT_SECONDS,
        OUTPUTS_S3_MAX_ATTEMPTS=OUTPUTS_S3_MAX_ATTEMPTS,
        OUTPUTS_S3_WEB_TIMEOUT_SECONDS=OUTPUTS_S3_WEB_TIMEOUT_SECONDS,
        OUTPUTS_S3_WEB_CONCURRENCY=OUTPUTS_S3_WEB_CONCURRENCY,
    )
    if _problem:
        raise ImproperlyConfigured(_problem)
    STORAGES = s3_storages(
        OUTPUTS_S3_BUCKET,
        prefix=OUTPUTS_S3_PREFIX,
        endpoint_url=AWS_S3_ENDPOINT_URL,
        access_key=AWS_ACCESS_KEY_ID,
        secret_key=AWS_SECRET_ACCESS_KEY,
        region_name=AWS_S3_REGION_NAME,
        addressing_style=AWS_S3_ADDRESSING_STYLE,
        url_expire_seconds=OUTPUTS_S3_URL_EXPIRE_SECONDS,
        connect_timeout=OUTPUTS_S3_CONNECT_TIMEOUT_SECONDS,
        read_timeout=OUTPUTS_S3_READ_TIMEOUT_SECONDS,
        max_attempts=OUTPUTS_S3_MAX_ATTEMPTS,
    )
else:
    STORAGES = filesystem_storages()

LOG_FORMAT = env("LOG_FORMAT", default="plain")  # or "json": one JSON object per line
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "reportsvc.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # APScheduler logs every job start at INFO; the worker logs what matters itself.
    # django-axes logs its version at every start; its lockouts are warnings.
    "loggers": {"apscheduler": {"level": "WARNING"}, "axes.apps": {"level": "WARNING"}},
}

# --- Worker (manage.py runapscheduler) -------------------------------------------------

WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=2)
WORKER_POLL_SECONDS = env.float("WORKER_POLL_SECONDS", default=0.25)
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=10)
WORKER_LOST_AFTER_SECONDS = env.float("WORKER_LOST_AFTER_SECONDS", default=60)
WORKER_SHUTDOWN_GRACE_SECONDS = env.float("WORKER_SHUTDOWN_GRACE_SECONDS", default=30)
SCHEDULE_SYNC_SECONDS = env.float("SCHEDULE_SYNC_SECONDS", default=10)
# A frozen, cut-off or slow scheduling worker loses leadership this long after its last
# renewal (README: Several workers); at least 3 s, renewed every third of it.
SCHEDULE_LEADER_LEASE_SECONDS = env.float("SCHEDULE_LEADER_LEASE_SECONDS", default=15)
if SCHEDULE_LEADER_LEASE_SECONDS < 3:
    raise ImproperlyConfigured("SCHEDULE_LEADER_LEASE_SECONDS must be at least 3.")
SCHEDULE_MISFIRE_GRACE_SECONDS = env.int("SCHEDULE_MISFIRE_GRACE_SECONDS", default=300)
RETRY_BACKOFF_SECONDS = env.int("RETRY_BACKOFF_SECONDS", default=60)
RUN_RETENTION_DAYS = env.int("RUN_RETENTION_DAYS", default=90)
HOUSEKEEPING_INTERVAL_SECONDS = env.int("HOUSEKEEPING_INTERVAL_SECONDS", default=3600)

# --- REST API ----------------------------------------------------------------------------

API_RUN_THROTTLE_RATE = env("API_RUN_THROTTLE_RATE", default="60/minute")
HEALTH_WORKER_MAX_AGE_SECONDS = env.int("HEALTH_WORKER_MAX_AGE_SECONDS", default=120)

# --- Metrics (GET /metrics, Prometheus) -------------------------------------------------

# Scrapers send "Authorization: Bearer <METRICS_TOKEN>", or come from one of the networks
# (the client's address as CLIENT_ADDRESS_HEADER says); with both set, both must hold.
# Neither: /metrics is off (404).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
if METRICS_TOKEN and not re.fullmatch(r"[A-Za-z0-9._~+/-]{32,}=*", METRICS_TOKEN):
    raise ImproperlyConfigured(
        "METRICS_TOKEN must be at least 32 characters: letters, digits and -._~+/ (e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))')."
    )
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])
try:
    METRICS_ALLOWED_NETWORKS = [
        str(network) for network in parse_networks(METRICS_ALLOWED_NETWORKS)
    ]
except ValueError as _error:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_error}.") from None

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous requests 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["reportsvc.web.renderers.EscapingJSONRenderer"],
    # Request bodies are JSON only: form encodings cannot say null, and a schema that
    # offers them leads generated clients to send "None" for it.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_THROTTLE_RATES": {"report-runs": API_RUN_THROTTLE_RATE},
    # The services' refusals (a bad parameter value, a full queue) as the API's errors.
    "EXCEPTION_HANDLER": "reportsvc.web.errors.api_exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "reportsvc API",
    "DESCRIPTION": "Reports, their runs, on-demand triggers and backfills, and downloads "
    "of each run's file in the report's format: CSV, gzip-compressed CSV (CSV.gz) or an "
    "Excel workbook (XLSX).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Like everything under /api/: a token or the admin session (README, REST API).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SERVE_AUTHENTICATION": None,  # DEFAULT_AUTHENTICATION_CLASSES
    "SWAGGER_UI_DIST": "SIDECAR",
    # Never the online validator: it would send the schema's address to a third party.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "reportsvc.openapi.add_error_responses",
        "reportsvc.openapi.describe_for_clients",
    ],
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.RunStatus",
        "RunTriggerEnum": "runs.models.RunTrigger",
    },
}

# --- Sign-in protection and Content-Security-Policy (README: Security) ------------------

# Where the client's address comes from. Unset: the connecting address (REMOTE_ADDR).
# Behind a proxy, the header it sets (e.g. X-Forwarded-For), read from the right: the
# address CLIENT_ADDRESS_PROXY_COUNT entries from the end is the one the outermost of
# your proxies saw. Never set it without a proxy that writes it: clients could pick
# their own address.
CLIENT_ADDRESS_HEADER = env("CLIENT_ADDRESS_HEADER", default="")
CLIENT_ADDRESS_PROXY_COUNT = env.int("CLIENT_ADDRESS_PROXY_COUNT", default=1)
# Admin logins: this many failures for one username from one address lock that pair
# (no other user, no other address) for the cool-off (django-axes).
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
LOGIN_COOLOFF_SECONDS = env.int("LOGIN_COOLOFF_SECONDS", default=900)
# API tokens: this many invalid tokens from one address within the cool-off refuse every
# token from that address until the cool-off has passed (429 with Retry-After).
TOKEN_FAILURE_LIMIT = env.int("TOKEN_FAILURE_LIMIT", default=20)
TOKEN_COOLOFF_SECONDS = env.int("TOKEN_COOLOFF_SECONDS", default=900)
for _name in (
    "CLIENT_ADDRESS_PROXY_COUNT",
    "LOGIN_FAILURE_LIMIT",
    "LOGIN_COOLOFF_SECONDS",
    "TOKEN_FAILURE_LIMIT",
    "TOKEN_COOLOFF_SECONDS",
):
    if vars()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be 1 or more, not {vars()[_name]}.")

AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=LOGIN_COOLOFF_SECONDS)
# The pair, so that nobody can lock a user out from everywhere, nor an office's address
# out for every user, by failing on purpose.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# A try during the lock does not prolong it: the page says when it ends.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "access.client_address.lockout_address"
AXES_LOCKOUT_CALLABLE = "access.views.login_paused"
AXES_DISABLE_ACCESS_LOG = True  # failures are what a lockout needs; no row per login

# Every response, the admin, the API docs and the API: scripts only from the service's own
# files, styles from its files or <style> elements that carry the response's nonce.
# Style attributes (style-src-attr) stay allowed: they cannot run script.
_CSP_DIRECTIVES = {
    "default-src": [SELF],
    "script-src": [SELF],
    "style-src": [SELF, NONCE],
    "style-src-attr": [UNSAFE_INLINE],
    "img-src": [SELF, "data:"],
    "font-src": [SELF],
    "connect-src": [SELF],
    "object-src": [NONE],
    "base-uri": [NONE],
    "form-action": [SELF],
    "frame-ancestors": [NONE],
}
# Where browsers send violation reports (empty: nowhere). Not settings of their own:
# django-csp refuses its old CSP_* settings.
_csp_report_uri = env("CSP_REPORT_URI", default="")
if _csp_report_uri:
    _CSP_DIRECTIVES["report-uri"] = [_csp_report_uri]
# 1: browsers only report what the policy would block (to try a change out).
if env.bool("CSP_REPORT_ONLY", default=False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": _CSP_DIRECTIVES}
else:
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": _CSP_DIRECTIVES}

# --- Notifications -------------------------------------------------------------------

# Console by default, so `make run` prints the mails; e.g. smtp+tls://user:pass@host:587
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="reportsvc <reportsvc@localhost>")
# Where people reach the service: links in notifications point here.
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
NOTIFY_ATTACH_MAX_BYTES = env.int("NOTIFY_ATTACH_MAX_BYTES", default=5 * 1024 * 1024)
# Bounds one whole webhook attempt: DNS, connect, TLS, request and response.
NOTIFY_WEBHOOK_TIMEOUT_SECONDS = env.float("NOTIFY_WEBHOOK_TIMEOUT_SECONDS", default=5)
NOTIFY_WEBHOOK_RETRIES = env.int("NOTIFY_WEBHOOK_RETRIES", default=3)
# Webhooks never go to these networks (checked at save and, resolved, at send time).
NOTIFY_WEBHOOK_BLOCKED_NETWORKS = env.list(
    "NOTIFY_WEBHOOK_BLOCKED_NETWORKS", default=list(DEFAULT_BLOCKED_NETWORKS)
)
try:
    NOTIFY_WEBHOOK_BLOCKED_NETWORKS = [
        str(network) for network in parse_networks(NOTIFY_WEBHOOK_BLOCKED_NETWORKS)
    ]
except ValueError as _error:
    raise ImproperlyConfigured(f"NOTIFY_WEBHOOK_BLOCKED_NETWORKS: {_error}.") from None
# While a report keeps failing (notify when: failure), a reminder at most this often;
# a report may set its own. A duration: 01:00:00, 1 00:00:00, 3600 (seconds), PT1H.
try:
    NOTIFY_REPEAT_AFTER = parse_repeat_after(
        env("NOTIFY_REPEAT_AFTER", default=str(DEFAULT_REPEAT_AFTER.total_seconds()))
    )
except ValueError as _error:
    raise ImproperlyConfigured(f"NOTIFY_REPEAT_AFTER: {_error}") from None
# Slack: an optional bot token (xoxb-…) lets Slack targets name a channel id (C…) and
# get the run's file uploaded (within NOTIFY_ATTACH_MAX_BYTES); without it, Slack targets
# are incoming-webhook URLs.
SLACK_BOT_TOKEN = env("SLACK_BOT_TOKEN", default="")
# Slack answers 429 with Retry-After: waited at most this long, at most this many times.
NOTIFY_RETRY_AFTER_MAX_SECONDS = env.float("NOTIFY_RETRY_AFTER_MAX_SECONDS", default=30)
NOTIFY_RATE_LIMIT_RETRIES = env.int("NOTIFY_RATE_LIMIT_RETRIES", default=2)
# Bounds a whole Slack file upload (three requests through slack-sdk).
NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS = env.float("NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS", default=60)
# FOR TESTS ONLY: an http://host:port origin that stands in for Slack's and Teams' fixed
# hosts (incoming webhooks, the Web API at <origin>/api/, Teams Workflows). Empty in any
# real deployment: Slack and Teams targets then reach only their official hosts.
NOTIFY_CHAT_TEST_ORIGIN = env("NOTIFY_CHAT_TEST_ORIGIN", default="")
# Per socket operation; Django's default (None) lets a hung mail server hold a sender.
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=30)
