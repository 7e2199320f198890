"""Concorde settings: one module, read from the environment.

With nothing set, Concorde runs on an embedded default (SQLite file, eager Celery, local-memory
cache, console email). ``DATABASE_URL`` switches to PostgreSQL, ``CELERY_BROKER_URL`` (or
``REDIS_URL``) to Redis. ``DJANGO_ENV=production`` makes a missing secret or host list fatal.
"""

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name, default=None):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name, default):
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


TESTING = "pytest" in sys.modules
PRODUCTION = env("DJANGO_ENV", "development") == "production"
DEBUG = env_bool("DJANGO_DEBUG", not PRODUCTION and not TESTING)

SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production.")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1],testserver")
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.sites",
    "django_htmx",
    "csp",
    "template_partials",
    "allauth",
    "allauth.account",
    "accounts",
    "causes",
    "consultations",
    "partners",
    "actions",
    "consensus",
]

MIDDLEWARE = [
    "config.observability.RequestIdMiddleware",  # X-Request-ID in, out and in the logs
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.badinput.RejectNulBytesMiddleware",  # 400 for NUL characters in parameters
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy (settings below)
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]

# Database: SQLite file unless DATABASE_URL is set (postgres://... uses psycopg 3).
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    if env("DB_CONNECT_TIMEOUT"):  # seconds before a connection attempt gives up (libpq)
        DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
            "DB_CONNECT_TIMEOUT", 10
        )
    # psycopg 3 connection pool (Django 5.1+), one pool per process, shared by its threads: set
    # DB_POOL_MAX_SIZE for threaded web processes (gunicorn --threads). A pool replaces persistent
    # connections, so CONN_MAX_AGE is forced to 0. Leave it unset for Celery workers
    # (docs/operations.md).
    if env_int("DB_POOL_MAX_SIZE", 0) > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1),
            "max_size": env_int("DB_POOL_MAX_SIZE", 0),
            "timeout": env_int("DB_POOL_TIMEOUT", 10),  # seconds a request waits for a connection
            "max_idle": env_int("DB_POOL_MAX_IDLE", 300),
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache: Redis when REDIS_URL (or CACHE_URL) is set, local memory otherwise.
REDIS_URL = env("REDIS_URL")
CACHE_URL = env("CACHE_URL", REDIS_URL)
if CACHE_URL:
    # Django's RedisCache behind a circuit breaker: with Redis down, cache calls answer as misses
    # after at most CACHE_SOCKET_TIMEOUT, then skip Redis for CACHE_RETRY_SECONDS (config/cache.py).
    CACHES = {
        "default": {
            "BACKEND": "config.cache.ResilientRedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {
                "socket_connect_timeout": float(env("CACHE_SOCKET_TIMEOUT", "0.5")),
                "socket_timeout": float(env("CACHE_SOCKET_TIMEOUT", "0.5")),
                "retry_seconds": float(env("CACHE_RETRY_SECONDS", "5")),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# django-ratelimit reads a failed count (the cache down, see above) as "limit": fail open instead,
# so that a Redis outage never refuses votes (config/ratelimit.py, docs/reliability.md).
RATELIMIT_FAIL_OPEN = env_bool("RATELIMIT_FAIL_OPEN", True)

# Sessions: in the database by default. SESSION_ENGINE=django.contrib.sessions.backends.cache (or
# .cached_db) keeps them in Redis and takes one write per vote off PostgreSQL (docs/scaling.md).
SESSION_ENGINE = env("SESSION_ENGINE", "django.contrib.sessions.backends.db")

# Celery: Redis when CELERY_BROKER_URL (or REDIS_URL) is set; otherwise tasks run eagerly in
# process, so a newcomer needs no server.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
if CELERY_BROKER_URL:
    CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_TASK_EAGER_PROPAGATES = True
# A broker that does not answer must not hold a request: give up publishing quickly; tasks
# enqueued after a commit then wait in the database outbox (config/outbox.py) until it is back.
CELERY_BROKER_CONNECTION_TIMEOUT = float(env("CELERY_BROKER_CONNECTION_TIMEOUT", "2"))
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": env_int("CELERY_PUBLISH_MAX_RETRIES", 2),
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# Same for the Redis result backend, which subscribes to a task's result when it is sent
# (its default retry policy waits ~20 s before giving up).
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ROUTES = {"consensus.tasks.*": {"queue": "engine"}}
CELERY_TASK_DEFAULT_QUEUE = "web"
# Engine time limits, read by consensus/tasks.py and consensus/services.py (seconds).
CONSENSUS_CHUNK_TIME_LIMIT = env_int("CONSENSUS_CHUNK_TIME_LIMIT", 900)
CONSENSUS_FINALIZE_TIME_LIMIT = env_int("CONSENSUS_FINALIZE_TIME_LIMIT", 3 * 3600)
CONSENSUS_MIN_ZONE_VOTES = env_int("CONSENSUS_MIN_ZONE_VOTES", 10)  # trusted votes before a zone is given
CONSENSUS_MIN_SEGMENT_SIZE = env_int("CONSENSUS_MIN_SEGMENT_SIZE", 10)  # k-anonymity of segment cuts
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A Redis broker hands an unacknowledged message to another worker after the visibility
    # timeout (1 h by default). Engine tasks are acks_late and the final step may run for
    # CONSENSUS_FINALIZE_TIME_LIMIT: the timeout must be longer, or the step runs twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int(
            "CELERY_VISIBILITY_TIMEOUT", CONSENSUS_FINALIZE_TIME_LIMIT + 3600
        )
    }
# Task events for Flower / `celery events` (docs/operations.md): off unless asked for.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_SEND_EVENTS", False)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
# Celery beat (the `beat` process of the Procfile). ENGINE_NIGHTLY_CRON: five crontab fields in
# CELERY_TIMEZONE ("minute hour day-of-month month day-of-week"), or "off".
ENGINE_NIGHTLY_CRON = env("ENGINE_NIGHTLY_CRON", "30 2 * * *")


def _crontab(spec):
    from celery.schedules import crontab

    fields = spec.split()
    if len(fields) != 5:
        raise ImproperlyConfigured(f"ENGINE_NIGHTLY_CRON needs 5 crontab fields, got {spec!r}.")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


CELERY_BEAT_SCHEDULE = {
    # Tasks that could not reach the broker after their commit (config/outbox.py).
    "outbox-flush": {
        "task": "config.outbox.outbox_flush_task",
        "schedule": float(env_int("OUTBOX_FLUSH_SECONDS", 60)),
        "options": {"expires": 55},
    },
}
if ENGINE_NIGHTLY_CRON.strip().lower() not in {"", "off", "none", "false", "0"}:
    # A FULL engine run on every open consultation whose proposals or votes changed.
    CELERY_BEAT_SCHEDULE["engine-nightly"] = {
        "task": "consensus.tasks.engine_nightly",
        "schedule": _crontab(ENGINE_NIGHTLY_CRON),
        "options": {"queue": "engine", "expires": 6 * 3600},
    }

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

SITE_ID = 1
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", "optional")
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
# allauth's limits (login, failed logins per IP and per e-mail, sign-ups, password resets), counted
# in the cache like ours; the adapter keys them on the hashed IP (config/ratelimit.py).
ACCOUNT_ADAPTER = "config.ratelimit.HashedIpAccountAdapter"
ACCOUNT_RATE_LIMITS = {
    "login": env("CONCORDE_RATELIMIT_LOGIN", "30/m/ip"),
    "login_failed": env("CONCORDE_RATELIMIT_LOGIN_FAILED", "10/m/ip,5/5m/key"),
    "signup": env("CONCORDE_RATELIMIT_SIGNUP", "20/m/ip"),
    "reset_password": env("CONCORDE_RATELIMIT_RESET_PASSWORD", "20/m/ip,5/m/key"),
}

EMAIL_BACKEND = env(
    "EMAIL_BACKEND",
    "django.core.mail.backends.locmem.EmailBackend"
    if TESTING
    else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Concorde <noreply@localhost>")

LANGUAGE_CODE = "fr"
LANGUAGES = [("fr", _("French")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("TIME_ZONE", "Europe/Paris")
CELERY_TIMEZONE = TIME_ZONE  # CELERY_BEAT_SCHEDULE's crontab is in local time
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", BASE_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Production hardening (also exercised by `manage.py check --deploy` with DJANGO_ENV=production).
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # Load balancers probe /health/ over plain HTTP on the private network.
    SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content-Security-Policy (django-csp): only our own files run or style the pages. No inline
# <script>, <style>, style="" or on*="" in templates: behaviour lives in static/js, looks in
# static/css (tests/test_security.py checks every page). CONCORDE_CSP_REPORT_ONLY=1 sends it as
# Content-Security-Policy-Report-Only, to try a change on a live site first.
_CSP_SELF = "'self'"
_CSP_POLICY = {
    "DIRECTIVES": {
        "default-src": [_CSP_SELF],
        "script-src": [_CSP_SELF],
        "style-src": [_CSP_SELF],
        "img-src": [_CSP_SELF, "data:"],
        "font-src": [_CSP_SELF],
        "connect-src": [_CSP_SELF],
        "form-action": [_CSP_SELF],
        "frame-ancestors": ["'none'"],
        "base-uri": [_CSP_SELF],
        "object-src": ["'none'"],
    }
}
if env_bool("CONCORDE_CSP_REPORT_ONLY", False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = _CSP_POLICY
else:
    CONTENT_SECURITY_POLICY = _CSP_POLICY

# Abuse (config/ratelimit.py, consultations/abuse.py, docs/reliability.md). Rates are
# "<count>/<period>" (s, m, h, d, or e.g. 5m); an empty value turns a limit off. "ip" counts per
# hashed client IP (keep it generous: many people share one IP behind a mobile carrier's NAT),
# "user" per account, or per anonymous session.
CONCORDE_RATELIMIT_IPV6_PREFIX = env_int("CONCORDE_RATELIMIT_IPV6_PREFIX", 64)  # one subscriber's block
CONCORDE_RATELIMITS = {
    "vote": {
        "ip": env("CONCORDE_RATELIMIT_VOTE", "300/m"),
        "user": env("CONCORDE_RATELIMIT_VOTE_USER", "60/m"),
    },
    "qualify": {
        "ip": env("CONCORDE_RATELIMIT_QUALIFY", "600/m"),
        "user": env("CONCORDE_RATELIMIT_QUALIFY_USER", "120/m"),
    },
    "sequence": {  # starting a sequence writes a dozen exposure rows
        "ip": env("CONCORDE_RATELIMIT_SEQUENCE", "120/m"),
        "user": env("CONCORDE_RATELIMIT_SEQUENCE_USER", "20/m"),
    },
    "propose": {
        "ip": env("CONCORDE_RATELIMIT_PROPOSE", "60/h"),
        "user": env("CONCORDE_RATELIMIT_PROPOSE_USER", "20/h"),
    },
    "search": {  # looking for words in the ideas' proposals: a pass over them, ~1 s at 2M
        "ip": env("CONCORDE_RATELIMIT_SEARCH", "30/m"),
        "user": env("CONCORDE_RATELIMIT_SEARCH_USER", "10/m"),
    },
}
# Bot protection of the proposal form: a signed timestamp (refused when sent sooner than
# MIN_SECONDS after the form was shown, or later than MAX_SECONDS) and a honeypot field.
CONCORDE_PROPOSE_MIN_SECONDS = env_int("CONCORDE_PROPOSE_MIN_SECONDS", 0 if TESTING else 3)
CONCORDE_PROPOSE_MAX_SECONDS = env_int("CONCORDE_PROPOSE_MAX_SECONDS", 6 * 3600)
# Vote bursts: more than N votes in M seconds from one participant or one hashed IP are flagged
# for moderators ("N/M"); later votes of a flagged participant are untrusted (not scored).
CONCORDE_VOTE_BURST = env("CONCORDE_VOTE_BURST", "30/60")
CONCORDE_VOTE_BURST_IP = env("CONCORDE_VOTE_BURST_IP", "200/60")

# Where the importers look for the public data sets shipped beside the checkout.
CONCORDE_DATA_DIR = Path(env("CONCORDE_DATA_DIR", BASE_DIR.parent / "shared" / "data"))

# Logs go to stderr. LOG_FORMAT=json writes one JSON object per line (time, level, logger,
# message, request_id, and task/task_id inside a Celery task); "plain" is the default.
LOG_FORMAT = env("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be 'plain' or 'json'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.observability.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.observability.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}
# With JSON logs, Celery workers keep Django's root handler instead of installing their own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
HEALTH_MIGRATIONS_TTL = env_int("HEALTH_MIGRATIONS_TTL", 300)  # seconds (config/health.py)

# Concorde's own settings.
CONCORDE_SITE_URL = env("CONCORDE_SITE_URL", "http://127.0.0.1:8000")  # absolute links in emails
CONCORDE_EVIDENCE_MAX_BYTES = env_int("CONCORDE_EVIDENCE_MAX_BYTES", 5 * 1024 * 1024)
CONCORDE_PROPOSALS_PER_HOUR = env_int("CONCORDE_PROPOSALS_PER_HOUR", 10)
CONCORDE_MODERATION_LOCK_MINUTES = env_int("CONCORDE_MODERATION_LOCK_MINUTES", 10)
CONCORDE_SHARES_MIN_VOTES = env_int("CONCORDE_SHARES_MIN_VOTES", 10)
CONCORDE_STATS_CACHE_SECONDS = env_int("CONCORDE_STATS_CACHE_SECONDS", 30)  # live counters; 0 = no cache
# The "Most voted" and "Most controversial" orders are refreshed from the vote totals and counters
# at most this often per consultation, when someone reads them
# (consultations.services.popular_rank_refresh_soon); at least 1.
CONCORDE_POPULAR_RANK_SECONDS = max(1, env_int("CONCORDE_POPULAR_RANK_SECONDS", 60))
# The sequence candidate pool of a consultation, cached per web process (consultations/
# sequence_cache.py): rebuilt after this many seconds (0: every sequence start, the default under
# pytest), on a moderation decision, or after REBUILD_VOTES votes (0: the pool's size, >= 500).
CONCORDE_SEQUENCE_POOL_SECONDS = env_int("CONCORDE_SEQUENCE_POOL_SECONDS", 0 if TESTING else 30)
CONCORDE_SEQUENCE_POOL_REBUILD_VOTES = env_int("CONCORDE_SEQUENCE_POOL_REBUILD_VOTES", 0)
# A stale pool keeps serving while a background thread of the process rebuilds it (off: the
# request that finds it stale rebuilds it).
CONCORDE_SEQUENCE_POOL_BACKGROUND = env_bool("CONCORDE_SEQUENCE_POOL_BACKGROUND", True)
# A process without a pool waits this long for its first build, then serves the INTERIM newest
# accepted proposals until the full pool is built (background rebuilds on).
CONCORDE_SEQUENCE_POOL_FIRST_WAIT = float(env("CONCORDE_SEQUENCE_POOL_FIRST_WAIT", "1"))
CONCORDE_SEQUENCE_POOL_INTERIM = env_int("CONCORDE_SEQUENCE_POOL_INTERIM", 2000)
# Rendered results sections, keyed by the current run (consensus/results_views.py); 0 = no cache.
CONCORDE_RESULTS_CACHE_SECONDS = env_int("CONCORDE_RESULTS_CACHE_SECONDS", 600)
CONCORDE_RESULTS_POLL_SECONDS = env_int("CONCORDE_RESULTS_POLL_SECONDS", 15)  # live counters
# Personal data (accounts/privacy.py, docs/privacy.md). IPs are only kept as keyed hashes; the key
# changes every UTC day unless CONCORDE_IP_HASH_DAILY_SALT is off. CONCORDE_TRUSTED_PROXIES: how many
# reverse proxies append to X-Forwarded-For in front of the app (0: the connecting address).
CONCORDE_IP_HASH_DAILY_SALT = env_bool("CONCORDE_IP_HASH_DAILY_SALT", True)
CONCORDE_TRUSTED_PROXIES = env_int("CONCORDE_TRUSTED_PROXIES", 0)
# Accounts with no login (nor sign-up) for this many days are anonymised by the nightly
# `accounts.tasks.anonymise_inactive_accounts` task (0 disables it).
CONCORDE_INACTIVE_ACCOUNT_DAYS = env_int("CONCORDE_INACTIVE_ACCOUNT_DAYS", 3 * 365)
ACCOUNTS_ANONYMISE_CRON = env("ACCOUNTS_ANONYMISE_CRON", "15 3 * * *")  # crontab, or "off"
if CONCORDE_INACTIVE_ACCOUNT_DAYS > 0 and ACCOUNTS_ANONYMISE_CRON.strip().lower() not in {
    "", "off", "none", "false", "0",
}:
    CELERY_BEAT_SCHEDULE["accounts-anonymise-inactive"] = {
        "task": "accounts.tasks.anonymise_inactive_accounts",
        "schedule": _crontab(ACCOUNTS_ANONYMISE_CRON),
        "options": {"queue": "web", "expires": 6 * 3600},
    }
# Moderation classifiers (consultations/classifier.py) of open consultations with new
# decisions are retrained nightly.
MODERATION_CLASSIFIER_CRON = env("MODERATION_CLASSIFIER_CRON", "45 3 * * *")  # crontab, or "off"
if MODERATION_CLASSIFIER_CRON.strip().lower() not in {"", "off", "none", "false", "0"}:
    CELERY_BEAT_SCHEDULE["moderation-classifiers-retrain"] = {
        "task": "consultations.moderation_classifiers_retrain",
        "schedule": _crontab(MODERATION_CLASSIFIER_CRON),
        "options": {"queue": "web", "expires": 6 * 3600},
    }
# Celery task metrics (config/metrics.py): GET /metrics for staff or with
# "Authorization: Bearer $CONCORDE_METRICS_TOKEN"; CONCORDE_METRICS_PORT also serves them from each
# worker's main process. Queue lengths are read for CONCORDE_METRICS_QUEUES (default: every queue
# named in the routes). PROMETHEUS_MULTIPROC_DIR (read by prometheus_client) for prefork workers.
CONCORDE_METRICS_TOKEN = env("CONCORDE_METRICS_TOKEN", "")
CONCORDE_METRICS_PORT = env_int("CONCORDE_METRICS_PORT", 0)
CONCORDE_METRICS_ADDR = env("CONCORDE_METRICS_ADDR", "0.0.0.0")
CONCORDE_METRICS_QUEUES = env_list("CONCORDE_METRICS_QUEUES")
# Imports and open data (consultations/imports.py, consultations/api.py, docs/open_data.md).
CONCORDE_IMPORT_MAX_BYTES = env_int("CONCORDE_IMPORT_MAX_BYTES", 200 * 1024 * 1024)  # one uploaded file
CONCORDE_IMPORT_MAX_UNZIPPED_BYTES = env_int("CONCORDE_IMPORT_MAX_UNZIPPED_BYTES", 800 * 1024 * 1024)
CONCORDE_API_CACHE_SECONDS = env_int("CONCORDE_API_CACHE_SECONDS", 60)  # JSON API bodies; 0 = no cache
