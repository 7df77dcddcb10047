"""Settings, read from the environment (and `.env` if present) through django-environ.

Every variable is listed in `.env.example`. Defaults are safe for development: SQLite and the
filesystem broker under `var/`, so nothing but Python is needed to run the app.
"""

from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

django_stubs_ext.monkeypatch()  # lets admin and field classes take type parameters at runtime

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = BASE_DIR / env.str("ACCOUNTS_POOL_VAR_DIR", default="var")  # absolute paths win
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _required(name: str) -> str:
    value: str = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"Set the environment variable {name} (see .env.example).")
    return value


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = _required("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "ninja",
    "axes",
    "accounts_pool",
]

MIDDLEWARE = [
    # First: nothing may parse a cookie before its size is bounded (CVE-2024-7592).
    "accounts_pool.middleware.CookieSizeLimitMiddleware",
    # Then the body: refused by its declared size before anything reads it.
    "accounts_pool.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "accounts_pool.middleware.PagePolicyMiddleware",  # django-csp's; JSON gets a fixed one
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After whitenoise (static files keep their cache headers): no-store on the rest.
    "accounts_pool.middleware.NoStoreMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A database outage met by a view: 503 with Retry-After, not a 500 (accounts_pool/outage.py).
    "accounts_pool.outage.DatabaseOutageMiddleware",
    # Last, as axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
    # A refused page: the styled 403 with its message, one log line instead of a traceback.
    "accounts_pool.views.errors.PageRefusalMiddleware",
]

# --- Content-Security-Policy (django-csp) ----------------------------------------------------
# Scripts, styles and everything else from this site only, never inline: behaviour lives in
# accounts_pool/static (app.js), so an injected <script> or onclick= runs nowhere. data: images
# are the admin's and the API docs' icons. JSON answers (the API's) carry a fixed policy that
# allows nothing, not this one, which django-csp builds per answer (accounts_pool.middleware).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Login throttling (django-axes) ----------------------------------------------------------
# Password logins (the pages' and the admin's) count failures per username and per client
# address; LOGIN_FAILURE_LIMIT of either locks it out for LOGIN_LOCKOUT_MINUTES, during which
# even the right password fails. Lockouts show in the admin under Axes; `manage.py axes_reset`
# lifts them. API tokens and consumer keys are not passwords and are not counted.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=20)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "accounts_pool.logins.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts_pool.logins.locked_out"
# A log line per failure is enough; a row per successful login would grow without end.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # no banner at every process start; failures are still logged

# Flash messages live in the session. The default (a signed cookie first) derives a cookie
# signing key on every request, API and health checks included: 15% of a /livez request and 5%
# of a checkout, for the few page views that show a message.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "config.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
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
                "accounts_pool.context_processors.teams",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DB_CONNECT_TIMEOUT = env.int("DB_CONNECT_TIMEOUT", default=3)  # seconds
DB_STATEMENT_TIMEOUT = env.float("DB_STATEMENT_TIMEOUT", default=30.0)  # seconds; 0: none
DB_TCP_USER_TIMEOUT = env.float("DB_TCP_USER_TIMEOUT", default=10.0)  # seconds
if DB_CONNECT_TIMEOUT < 1 or DB_STATEMENT_TIMEOUT < 0 or DB_TCP_USER_TIMEOUT <= 0:
    raise ImproperlyConfigured(
        "DB_CONNECT_TIMEOUT must be at least 1, DB_STATEMENT_TIMEOUT at least 0 and "
        "DB_TCP_USER_TIMEOUT above 0 (seconds)."
    )
# Seconds a client is told to wait (Retry-After) when the database does not answer.
DB_UNAVAILABLE_RETRY_AFTER = env.int("DB_UNAVAILABLE_RETRY_AFTER", default=5)
# Keep connections open between requests and tasks (a new PostgreSQL backend per request costs
# more than the request); checked before reuse so a restarted database is survived.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions and a generous busy timeout let the web app, a worker and beat
    # share one SQLite file without "database is locked" errors.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Tests that start a real worker process need the test database in a file it can open.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Values travel apart from the SQL, so a statement run twice on a connection is prepared
    # and PostgreSQL stops planning it again: a third less database CPU per checkout
    # (bench/checkout.py). Behind a transaction-mode pooler (PgBouncer < 1.21) set
    # DB_PREPARE_THRESHOLD= (empty) to turn preparing off.
    _prepare = env.str("DB_PREPARE_THRESHOLD", default="2")
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"server_side_binding": True, "prepare_threshold": int(_prepare) if _prepare else None}
    )
    # Outages answer instead of hanging (a blackholed database once held checkout and /healthz
    # for 31 s): a connection attempt gives up after DB_CONNECT_TIMEOUT (libpq's minimum is 2 s);
    # the server cancels a statement after DB_STATEMENT_TIMEOUT (0: never; set through the
    # startup packet, so no round trip; behind PgBouncer, list `options` in its
    # ignore_startup_parameters or set 0 here and the timeout on the role); and sent data that
    # no one acknowledges closes the connection after DB_TCP_USER_TIMEOUT. The API then answers
    # 503 with Retry-After (accounts_pool/outage.py).
    DATABASES["default"]["OPTIONS"].update(
        {
            "connect_timeout": DB_CONNECT_TIMEOUT,
            "tcp_user_timeout": int(DB_TCP_USER_TIMEOUT * 1000),
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
    )
    if DB_STATEMENT_TIMEOUT > 0:
        DATABASES["default"]["OPTIONS"]["options"] = (
            f"-c statement_timeout={int(DB_STATEMENT_TIMEOUT * 1000)}"
        )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# The Cookie headers of one request, together, past this size are refused (431) before they
# are parsed: a session and a CSRF cookie take about 150 bytes.
COOKIE_MAX_BYTES = env.int("COOKIE_MAX_BYTES", default=8192)

# Request bodies past REQUEST_MAX_BODY_BYTES (the relay's: RELAY_MAX_BODY_BYTES) are refused
# (413) by their Content-Length before any byte is read (accounts_pool/middleware.py), under
# WSGI and ASGI. Within it, JSON bodies past DATA_UPLOAD_MAX_MEMORY_SIZE are refused when read,
# and uploaded files stay in memory: the only upload handler is the memory one, and it takes
# the whole limit, so no upload is ever written to a temporary file.
REQUEST_MAX_BODY_BYTES = env.int("REQUEST_MAX_BODY_BYTES", default=2 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = REQUEST_MAX_BODY_BYTES
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.MemoryFileUploadHandler"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns at start-up when it is missing
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
WHITENOISE_USE_FINDERS = DEBUG  # serve straight from the apps while developing

# --- Security when not DEBUG -----------------------------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
# Behind the proxy, the client's address is the last X-Forwarded-For entry (the one the proxy
# appended), for login throttling; REMOTE_ADDR is the proxy's own.
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be 'text' or 'json'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "accounts_pool.logs.JsonFormatter"},
    },
    # Invite tokens and login codes in URLs are masked in every line ("Not Found: /invite/...").
    "filters": {"mask_secrets": {"()": "accounts_pool.logs.MaskSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["mask_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # httpx logs every request URL at INFO; the provider module logs what matters.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # uvicorn (the relay) configures its loggers before it loads the app; this puts its
        # lines through the same handler: masked, and JSON under LOG_FORMAT=json. Not "uvicorn"
        # itself: configuring a parent resets its children, and would turn back on the access
        # log that the Procfile's --no-access-log turned off.
        "uvicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# --- Health and metrics --------------------------------------------------------------------
# /metrics answers a Bearer METRICS_TOKEN, or any client inside METRICS_ALLOWED_NETWORKS. No
# network by default: behind a proxy on the same host every client arrives from loopback.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])
# /healthz checks the database and the broker at once, each given this long: it answers
# within about that, whatever is down or hanging.
HEALTHZ_TIMEOUT = env.float("HEALTHZ_TIMEOUT", default=1.0)
HEALTHZ_BROKER_TIMEOUT = env.float("HEALTHZ_BROKER_TIMEOUT", default=HEALTHZ_TIMEOUT)

# --- Secrets at rest -----------------------------------------------------------------------
# Comma-separated Fernet keys: the first encrypts, all decrypt (rotation). Loaded at start-up
# (AppConfig.ready, crypto.load_keys) so a bad key fails closed before anything is read or written.
ACCOUNTS_POOL_ENCRYPTION_KEYS = env.list("ACCOUNTS_POOL_ENCRYPTION_KEYS", default=[])

# --- Providers -----------------------------------------------------------------------------
ANTHROPIC_AUTHORIZE_URL = env.str(
    "ANTHROPIC_AUTHORIZE_URL", default="https://claude.ai/oauth/authorize"
)
ANTHROPIC_TOKEN_URL = env.str(
    "ANTHROPIC_TOKEN_URL", default="https://platform.claude.com/v1/oauth/token"
)
ANTHROPIC_USAGE_URL = env.str(
    "ANTHROPIC_USAGE_URL", default="https://api.anthropic.com/api/oauth/usage"
)
ANTHROPIC_PROFILE_URL = env.str(
    "ANTHROPIC_PROFILE_URL", default="https://api.anthropic.com/api/oauth/profile"
)
ANTHROPIC_HTTP_TIMEOUT = env.float("ANTHROPIC_HTTP_TIMEOUT", default=20.0)
# The Messages API the relay forwards to (never taken from a request).
ANTHROPIC_API_URL = env.str("ANTHROPIC_API_URL", default="https://api.anthropic.com")
# A relayed request body is read once, up to this size, so it can be replayed to another account.
RELAY_MAX_BODY_BYTES = env.int("RELAY_MAX_BODY_BYTES", default=32 * 1024 * 1024)

# --- Refresh cycle -------------------------------------------------------------------------
# How long a refresh claim holds before another worker may take the account over (a killed
# worker never blocks an account for longer than this).
ACCOUNTS_POOL_CLAIM_SECONDS = env.int("ACCOUNTS_POOL_CLAIM_SECONDS", default=120)
# Per beat tick, at most BATCH accounts are queued, CHUNK per dispatcher run: a full run hands
# the rest of the tick to the next run, so a run's time does not grow with the number due.
ACCOUNTS_POOL_DISPATCH_BATCH = env.int("ACCOUNTS_POOL_DISPATCH_BATCH", default=500)
ACCOUNTS_POOL_DISPATCH_CHUNK = env.int("ACCOUNTS_POOL_DISPATCH_CHUNK", default=50)
ACCOUNTS_POOL_EVENT_RETENTION_DAYS = env.int("ACCOUNTS_POOL_EVENT_RETENTION_DAYS", default=30)
# Every checkout writes a row; reports and sessions only ever need recent ones.
ACCOUNTS_POOL_CHECKOUT_RETENTION_DAYS = env.int("ACCOUNTS_POOL_CHECKOUT_RETENTION_DAYS", default=7)
# PKCE logins and invite links, once expired, only explain "this link expired" for a while.
ACCOUNTS_POOL_LOGIN_RETENTION_DAYS = env.int("ACCOUNTS_POOL_LOGIN_RETENTION_DAYS", default=1)

# --- Notifications (README "Notifications") -------------------------------------------------
# Links in messages point here (the address people open the pages at).
ACCOUNTS_POOL_SITE_URL = env.str("ACCOUNTS_POOL_SITE_URL", default="http://localhost:8000")
# Webhook and Slack targets resolving to loopback, private or link-local addresses are refused
# unless this is set (single-machine installs and the tests set it).
ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS = env.bool(
    "ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS", default=False
)
# A failed delivery waits this long, doubling per failure (at most 2 h), for up to 24 h.
ACCOUNTS_POOL_NOTIFY_RETRY_BASE_SECONDS = env.float(
    "ACCOUNTS_POOL_NOTIFY_RETRY_BASE_SECONDS", default=30.0
)
ACCOUNTS_POOL_NOTIFY_TIMEOUT = env.float("ACCOUNTS_POOL_NOTIFY_TIMEOUT", default=10.0)
# Email channels: EMAIL_URL such as smtp+tls://USER:PASSWORD@HOST:587 (default: printed to the
# console, for development).
vars().update(
    {
        name: value
        for name, value in env.email_url("EMAIL_URL", default="consolemail://").items()
        if value is not None
    }
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="accounts-pool@localhost")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)

# --- Celery --------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # broadcast (remote control) tables
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Connections are kept across tasks and recycled as Django recycles them across requests
# (config/celery.py); Celery's fixup would otherwise close them after every task.
CELERY_DB_REUSE_MAX = 2**31
CELERY_TIMEZONE = TIME_ZONE
# Beat's interval for the two dispatchers. Unset, beat keeps the schedule in the database (one
# minute as created; operators edit it in the admin). Set, beat points both dispatchers at every
# N seconds when it starts (config/celery.py): tests and demos tick in seconds, not minutes.
ACCOUNTS_POOL_BEAT_SECONDS: int | None = env.int("ACCOUNTS_POOL_BEAT_SECONDS", default=None)
if ACCOUNTS_POOL_BEAT_SECONDS is not None and ACCOUNTS_POOL_BEAT_SECONDS < 1:
    raise ImproperlyConfigured("ACCOUNTS_POOL_BEAT_SECONDS must be at least 1 (or unset).")
# The queue tasks are sent to and workers take from. Deployments sharing one broker database,
# and the tests' processes, each use their own: no process takes another's messages.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")

# --- Usage accounting and limits -----------------------------------------------------------
# Relayed requests' tokens are summed in memory and written every USAGE_FLUSH_SECONDS (and at a
# clean exit): a process killed outright loses at most that many seconds of counts.
USAGE_ACCOUNTING = env.bool("USAGE_ACCOUNTING", default=True)
USAGE_FLUSH_SECONDS = env.float("USAGE_FLUSH_SECONDS", default=5.0)
QUOTA_HISTORY_RETENTION_DAYS = env.int("QUOTA_HISTORY_RETENTION_DAYS", default=30)
# Consumer-key limits keep their counters in Django's cache: set CACHE_URL to Redis (e.g.
# redis://127.0.0.1:6379/1) whenever more than one process serves the relay or the API, so the
# limits hold across them. Unset, each process counts in its own memory (the embedded default's
# single process).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
