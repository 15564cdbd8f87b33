"""One env-driven settings module.

Nothing configured: embedded SQLite (WAL) and Celery tasks run in-process, which is what
`make demo` uses. DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://... switch to
Postgres and real Celery workers. Production: DJANGO_DEBUG=0 plus a secret key and hosts.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0")
    SECRET_KEY = "dev-only-insecure-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")

# Where model artifacts, rejects files and the embedded database live.
DATA_DIR = Path(os.environ.get("LOYALTY_DATA_DIR", BASE_DIR / "var"))
ARTIFACT_DIR = Path(os.environ.get("LOYALTY_ARTIFACT_DIR", DATA_DIR / "artifacts"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "loyalty",
    "recommendations",
    "governance",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "loyalty.middleware.SlidingSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "loyalty.middleware.ContentSecurityPolicyMiddleware",
    "loyalty.middleware.DatabaseUnavailableMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "loyalty.urls"
WSGI_APPLICATION = "loyalty.wsgi.application"

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
                "loyalty.context_processors.roles",
            ],
        },
    },
    {
        # Only the queue rows (loyalty/jinja.py says why); looked up after Django's templates.
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [BASE_DIR / "templates" / "jinja2"],
        "APP_DIRS": False,
        "OPTIONS": {
            "environment": "loyalty.jinja.environment",
            "context_processors": ["loyalty.context_processors.roles"],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(DATA_DIR / "loyalty.sqlite3")),
            "OPTIONS": {
                # WAL lets the dashboard read while an import or scoring run writes.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Sessions expire after a working day of inactivity, and when the browser closes.
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", 8 * 3600))
# Sliding expiry without a write per request: loyalty.middleware.SlidingSessionMiddleware.
SESSION_REFRESH_SECONDS = 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie

# Brute-force protection: lock a username+IP pair after five failures for an hour.
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(hours=1)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env_bool("AXES_ENABLED", True)

# Personal data at rest: Fernet keys, comma-separated, newest first (the newest encrypts, all
# decrypt; `manage.py rotate_pii_keys` moves old rows to the newest). Without keys a development
# key is derived from SECRET_KEY; production (DJANGO_DEBUG=0) refuses to start without them.
LOYALTY_PII_KEYS = env_list("LOYALTY_PII_KEYS")
if not LOYALTY_PII_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured("LOYALTY_PII_KEYS must be set when DJANGO_DEBUG=0")
    LOYALTY_PII_KEYS = [
        base64.urlsafe_b64encode(hashlib.sha256(b"loyalty-pii-dev-key:" + SECRET_KEY.encode()).digest()).decode()
    ]
# Events older than this are purged (in batches, audited) by the `purge-expired-events` beat task.
LOYALTY_EVENT_RETENTION_DAYS = int(os.environ.get("LOYALTY_EVENT_RETENTION_DAYS", 3 * 365))
LOYALTY_RETENTION_BATCH_SIZE = int(os.environ.get("LOYALTY_RETENTION_BATCH_SIZE", 10_000))

# A manager may undo their own decision for this long; afterwards it stands (a new decision is needed).
# CSV uploads through the API above this size are refused (413) before any row is read; the
# import commands stream files of any size.
LOYALTY_IMPORT_MAX_UPLOAD_MB = int(os.environ.get("LOYALTY_IMPORT_MAX_UPLOAD_MB", 50))
DECISION_UNDO_SECONDS = int(os.environ.get("DECISION_UNDO_SECONDS", 120))
# Opening or selecting a queue item shows it to other managers as "X is reviewing" this long
# (recommendations.claims; advice, never a lock).
REVIEW_CLAIM_SECONDS = int(os.environ.get("REVIEW_CLAIM_SECONDS", 120))
# An open queue page asks this often what changed on its rows (decided or opened by others).
QUEUE_PRESENCE_SECONDS = int(os.environ.get("QUEUE_PRESENCE_SECONDS", 15))
# The status counts at the top of the queue are cached this long (and dropped on every decision).
QUEUE_COUNTS_CACHE_SECONDS = int(os.environ.get("QUEUE_COUNTS_CACHE_SECONDS", 30))
# Currency of expected values and offer costs, as shown to managers.
LOYALTY_CURRENCY = os.environ.get("LOYALTY_CURRENCY", "EUR")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", 31536000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "loyalty.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "loyalty.api_errors.json_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Loyalty decision desk API",
    "DESCRIPTION": "Recommendations, decisions, imports, models and governance.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The API's contract is JSON (uploads declare multipart themselves): documenting the
    # form encodings DRF also parses would promise shapes no client should rely on.
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    # The schema names every endpoint: signed-in users only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# Celery: no broker configured means tasks run eagerly in the calling process.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL or None)
# A chunk is acknowledged only after it is written; a killed pool child gives it back.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4 * 3600}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": 4 * 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_WORKER_MAX_MEMORY_PER_CHILD = int(os.environ.get("CELERY_MAX_MEMORY_KB", 1_500_000))
# Retention purge (privacy) and deadlines: stale offers expire, items past their SLA escalate.
CELERY_BEAT_SCHEDULE: dict = {
    "purge-expired-events": {"task": "loyalty.purge_expired_events", "schedule": timedelta(hours=24)},
    "governance-enforce-deadlines": {
        "task": "governance.enforce_deadlines",
        "schedule": float(os.environ.get("GOVERNANCE_DEADLINES_EVERY_SECONDS", 15 * 60)),
    },
    # The learning loop: a challenger trained on history plus decision feedback, gated.
    "recommendations-retrain": {
        "task": "recommendations.retrain_model",
        "schedule": float(os.environ.get("LEARNING_RETRAIN_EVERY_HOURS", 7 * 24)) * 3600,
    },
    # Monitoring of the champion: a fairness report (opens alerts that route a group's items)
    # and feature drift (PSI against training; routing reads the stored value).
    "governance-fairness-report": {
        "task": "governance.fairness_report",
        "schedule": float(os.environ.get("FAIRNESS_REPORT_EVERY_HOURS", 24)) * 3600,
    },
    "governance-drift-check": {
        "task": "governance.model_drift_check",
        "schedule": float(os.environ.get("DRIFT_CHECK_EVERY_HOURS", 24)) * 3600,
    },
}
# What-if segment scenarios live outside recommendations/tasks.py (a separate module).
CELERY_IMPORTS = ("recommendations.whatif_tasks",)

# Several web processes must share one cache (REDIS_URL): review claims and the queue counts
# live there. Without it each process keeps its own (fine for `make demo`'s single runserver).
# CACHE_KEY_PREFIX keeps two deployments (or a load test) on one Redis apart.
CACHES = {
    "default": {
        **(
            {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"]}
            if os.environ.get("REDIS_URL")
            else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        ),
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", ""),
    }
}

# Logs carry ids and counts, never names, emails or birth dates.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
AXES_VERBOSE = False  # one log line per process start is noise in every command
