"""Settings shared by every environment; values come from the environment."""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from nudged.core.logs import FORMATS as LOG_FORMATS
from nudged.core.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Read as they are: django-environ would take a value starting with `$` for the name of
# another variable.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
# Earlier keys, still accepted for signatures (callback URLs, sessions) while they expire.
SECRET_KEY_FALLBACKS = [k for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k]
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
]
THIRD_PARTY_APPS = [
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "csp",
]
LOCAL_APPS = [
    "nudged.core",
    "inventory",
    "shop",
    "factory_bridge",
]
INSTALLED_APPS = DJANGO_APPS + THIRD_PARTY_APPS + LOCAL_APPS

MIDDLEWARE = [
    # First: whatever answers (an https redirect too) and whatever is logged carries the id.
    "nudged.core.middleware.RequestIdMiddleware",
    # Next: it times and counts every request, whatever answers it (/metrics).
    "nudged.ops.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Every answer carries the Content-Security-Policy below, whatever view answered it.
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during login into its response.
    "axes.middleware.AxesMiddleware",
]

# Pages load scripts, styles, images and fonts only from this site, and nothing inline: no
# page has inline code (the storefront's, the admin's and Swagger UI's scripts and styles are
# static files), so an injected <script> or style attribute does nothing. data: images are
# the icons inside Swagger UI's stylesheet. No page may be framed, nor post a form elsewhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "nudged.urls"
WSGI_APPLICATION = "nudged.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's own templates: the admin index (a link to the dashboard) and the
        # dashboard.
        "DIRS": [BASE_DIR / "nudged" / "templates"],
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

DATABASES = {"default": env.db("DATABASE_URL", default="mysql://root@127.0.0.1:3306/nudged")}
DATABASES["default"].setdefault("OPTIONS", {}).update(
    {
        "charset": "utf8mb4",
        # Django's recommended level on MySQL: a re-read inside a transaction sees committed rows.
        "isolation_level": "read committed",
        "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
    }
)
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# A kept connection is checked before each request uses it: after a MySQL restart or failover
# the first request gets a new connection instead of failing on the dead one.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The limit store: Redis, shared by every web process and host (ElastiCache on AWS). Rate
# limits count there (nudged.core.ratelimits); a URL that names no Redis (locmemcache://)
# counts in each process's memory instead, for a single process only.
CACHE_URL = env("CACHE_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": env.cache_url_config(CACHE_URL),
    # In each web process's memory: what many open pages poll, shared by them for a moment.
    "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "local"},
}
# Seconds a web process reuses the product list it answered (GET /api/products/): every open
# storefront polls it, and a rush is no time for each poll to cost the database (0: never).
PRODUCT_LIST_MAX_AGE = env.float("PRODUCT_LIST_MAX_AGE", default=2.0)
AUTHENTICATION_BACKENDS = [
    # Refuses a login while its username and address are locked out, before the password
    # is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed logins (same username from the same address) before a lockout, and how long it
# lasts in hours (0: until `manage.py axes_reset`).
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(hours=env.float("AXES_COOLOFF_TIME", default=1.0)) or None
# The username at one client address: failures from one address never lock the name out for
# staff elsewhere, and an address alone would let anyone behind the same NAT as staff (or
# behind the load balancer, were its address taken for the client's) lock them out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The client's address as every limit reads it: X-Forwarded-For only through TRUSTED_PROXIES.
AXES_CLIENT_IP_CALLABLE = "nudged.core.clients.client_address"
AXES_RESET_ON_SUCCESS = True


def trusted_proxies() -> list[str]:
    """TRUSTED_PROXIES: the networks (CIDRs or single addresses) of the proxies in front."""
    proxies = [proxy.strip() for proxy in env.list("TRUSTED_PROXIES", default=[]) if proxy.strip()]
    for proxy in proxies:
        try:
            # Strict, as gunicorn's forwarded_allow_ips reads the same list: 10.0.0.1/8 is a typo.
            ipaddress.ip_network(proxy)
        except ValueError as exc:
            raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}.") from None
    return proxies


# Proxies in front of the web servers whose X-Forwarded-For entries are believed (empty: the
# header is ignored and the client is the connection's address); gunicorn trusts the same.
TRUSTED_PROXIES = trusted_proxies()

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "Asia/Seoul"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The project's own static files (the admin's and Swagger UI's stylesheets); apps keep theirs.
STATICFILES_DIRS = [BASE_DIR / "nudged" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["nudged.core.parsers.JsonParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "EXCEPTION_HANDLER": "nudged.core.api.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "nudged.core.api.JsonFirstNegotiation",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Nudged Sales API",
    "DESCRIPTION": "Order donuts; stock is taken atomically or the order is refused.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # An order or a basket as placed, and as its receipt reads (a pre-order may be cancelled).
    "ENUM_NAME_OVERRIDES": {
        "PlacedStatusEnum": ["completed", "backordered"],
        "ReceiptStatusEnum": ["completed", "backordered", "cancelled"],
    },
    # Swagger UI is served from this server: the shop must work without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Largest quantity one order may ask for.
ORDER_MAX_QUANTITY = env.int("ORDER_MAX_QUANTITY", default=100)
# Most lines (donuts, one line each) one basket order may have.
ORDER_MAX_LINES = env.int("ORDER_MAX_LINES", default=12)
# Units of one donut one customer may buy per window (0: no limit); products may override it.
PURCHASE_LIMIT = env.int("PURCHASE_LIMIT", default=10)
PURCHASE_LIMIT_WINDOW = env.int("PURCHASE_LIMIT_WINDOW", default=3600)
# Units of one donut all customers at one client address may buy per window, on every channel
# together (0: no ceiling); unset: ADDRESS_CUSTOMERS times the customer limit (shop.services).
PURCHASE_LIMIT_PER_ADDRESS = env.int("PURCHASE_LIMIT_PER_ADDRESS", default=None)
# Order requests one client address may send, on every channel together ("20/s", "300/m",
# "10/h", "1000/d"); "off" for none.
ORDER_RATE_LIMIT = env("ORDER_RATE_LIMIT", default="20/s")
# The SKU the original Sales API (`POST /checkout`) sells, one unit per call.
LEGACY_SKU = env("LEGACY_SKU", default="CP-502101")

# --- AWS (SNS/SQS). AWS_ENDPOINT_URL unset means real AWS with the standard credential chain.
AWS_ENDPOINT_URL = env("AWS_ENDPOINT_URL", default="") or None
AWS_DEFAULT_REGION = env("AWS_DEFAULT_REGION", default="ap-northeast-2")
# The names of the topics and queues declared in factory_bridge/infrastructure.py, one setting
# each; every reader finds them through that declaration.
SNS_STOCK_TOPIC = env("SNS_STOCK_TOPIC", default="nudged-stock-events")
SNS_SALES_TOPIC = env("SNS_SALES_TOPIC", default="nudged-sales-events")
SQS_RESTOCK_QUEUE = env("SQS_RESTOCK_QUEUE", default="nudged-restock")
SQS_RESTOCK_DLQ = env("SQS_RESTOCK_DLQ", default="nudged-restock-dlq")
SQS_OPS_QUEUE = env("SQS_OPS_QUEUE", default="nudged-ops")
# Back-in-stock emails: stock.replenished events, and where the ones that keep failing go.
SQS_NOTIFY_QUEUE = env("SQS_NOTIFY_QUEUE", default="nudged-notify")
SQS_NOTIFY_DLQ = env("SQS_NOTIFY_DLQ", default="nudged-notify-dlq")
SQS_MAX_RECEIVE_COUNT = env.int("SQS_MAX_RECEIVE_COUNT", default=5)
SQS_VISIBILITY_TIMEOUT = env.int("SQS_VISIBILITY_TIMEOUT", default=30)
SQS_WAIT_TIME = env.int("SQS_WAIT_TIME", default=10)
# Seconds the operations feed keeps events nobody read (SQS default: 4 days).
SQS_OPS_RETENTION = env.int("SQS_OPS_RETENTION", default=345600)

# --- Event pipeline (transactional outbox).
# Off only in tests and the benchmark's own settings: without events nothing restocks.
EVENTS_ENABLED = True
EVENT_PUBLISHER = env("EVENT_PUBLISHER", default="factory_bridge.publishers.SnsPublisher")
# Seconds the web process waits to coalesce commits into one relay task.
OUTBOX_RELAY_DEBOUNCE = env.float("OUTBOX_RELAY_DEBOUNCE", default=0.05)
# Seconds the relay loop lets sales gather before publishing them: a sale waits at most this
# long, and SNS carries one message per product per interval, whatever the order rate.
OUTBOX_SALES_INTERVAL = env.float("OUTBOX_SALES_INTERVAL", default=0.5)
# Failed publishes after which an event SNS refuses is set aside as dead (retried from the admin).
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=10)
# Days published events are kept before the hourly purge deletes them.
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)


# Days the hourly purge keeps each table's history (nudged.ops.purges); at least one each, since
# the dashboard draws the last day from these rows.
# Restock requests that finished (arrived, ordered again, or failed for good); each product's
# latest is kept whatever its age. Keep it well above FACTORY_CALLBACK_MAX_AGE: a late
# callback needs its row.
RESTOCK_RETENTION_DAYS = env.int("RESTOCK_RETENTION_DAYS", default=90)
# Reorder decisions no restock request refers to.
REORDER_DECISION_RETENTION_DAYS = env.int("REORDER_DECISION_RETENTION_DAYS", default=90)
# Stock adjustments: staff's counts and the factory's arrivals, the stock's audit trail.
STOCK_ADJUSTMENT_RETENTION_DAYS = env.int("STOCK_ADJUSTMENT_RETENTION_DAYS", default=365)
# The consumers' notes on why a message failed (a dead one keeps its error in its own row).
MESSAGE_FAILURE_RETENTION_DAYS = env.int("MESSAGE_FAILURE_RETENTION_DAYS", default=30)
# Days an ended alert (sent, unsubscribed, failed, never confirmed) is kept before a purge.
ALERT_RETENTION_DAYS = env.int("ALERT_RETENTION_DAYS", default=90)
RETENTION_SETTINGS = (
    "RESTOCK_RETENTION_DAYS",
    "REORDER_DECISION_RETENTION_DAYS",
    "STOCK_ADJUSTMENT_RETENTION_DAYS",
    "MESSAGE_FAILURE_RETENTION_DAYS",
    "ALERT_RETENTION_DAYS",
)
for _name in RETENTION_SETTINGS:
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1 (days), not {globals()[_name]}.")

# --- Legacy factory.
FACTORY_CLIENT = env("FACTORY_CLIENT", default="factory_bridge.factory.HttpFactoryClient")
FACTORY_API_URL = env("FACTORY_API_URL", default="http://127.0.0.1:8001")
FACTORY_CONNECT_TIMEOUT = env.float("FACTORY_CONNECT_TIMEOUT", default=3.0)
FACTORY_READ_TIMEOUT = env.float("FACTORY_READ_TIMEOUT", default=10.0)
FACTORY_CALLBACK_TIMEOUT = env.int("FACTORY_CALLBACK_TIMEOUT", default=600)
# Seconds from a reorder decision to the arrival, until callbacks have measured it.
FACTORY_LEAD_TIME = env.float("FACTORY_LEAD_TIME", default=40.0)
# A restock without its callback after this many of the factory's measured lead times is
# overdue and ordered again (never sooner than a minute, never later than
# FACTORY_CALLBACK_TIMEOUT): a lost callback is noticed while its pre-orders can still be moved.
FACTORY_CALLBACK_LEAD_TIMES = env.float("FACTORY_CALLBACK_LEAD_TIMES", default=3.0)

# --- Pre-orders: the time promised is the batch's expected arrival plus a margin of this
# share of the factory's lead time and these seconds (the relay, the queue and the factory
# call before production starts, and its jitter).
PROMISE_MARGIN = env.float("PROMISE_MARGIN", default=0.25)
PROMISE_MARGIN_SECONDS = env.float("PROMISE_MARGIN_SECONDS", default=5.0)

# --- Replenishment (inventory.policy).
# Seconds over which the demand estimate forgets: shorter follows a rush sooner, longer is steadier.
DEMAND_HORIZON = env.float("DEMAND_HORIZON", default=15.0)
# Seconds between two refreshes of the demand estimates and reorder points.
ESTIMATE_REFRESH_SECONDS = env.float("ESTIMATE_REFRESH_SECONDS", default=2.0)
# Extra share of the demand expected over the lead time kept on hand and on order.
REORDER_SAFETY = env.float("REORDER_SAFETY", default=0.5)
# Most units a product may have on order, and highest reorder point, unless its factory or
# the product says otherwise: about 1.5 times what a 200-customer rush on a 40 s factory
# reaches, and a bound on what any estimate can order.
REORDER_CEILING = env.int("REORDER_CEILING", default=2000)
# Seconds a stock count typed by staff settles before the estimates loop reorders for it: a
# count corrected at once decides nothing.
STOCK_COUNT_SETTLE = env.float("STOCK_COUNT_SETTLE", default=30.0)
# Seconds a callback URL stays valid: far longer than the factory takes, and than the
# overdue sweep waits before ordering again, so a late callback still adds its stock.
FACTORY_CALLBACK_MAX_AGE = env.int("FACTORY_CALLBACK_MAX_AGE", default=86400)
# Orders the overdue sweep places for one depletion (retries of an order the factory refused,
# re-orders of one it never called back for) before the restock fails and needs staff.
FACTORY_MAX_REORDERS = env.int("FACTORY_MAX_REORDERS", default=3)
# Seconds before the sweep retries an order the factory refused: doubles per retry, capped.
FACTORY_RETRY_BACKOFF = env.int("FACTORY_RETRY_BACKOFF", default=30)
FACTORY_RETRY_BACKOFF_MAX = env.int("FACTORY_RETRY_BACKOFF_MAX", default=600)
FACTORY_REQUESTER = env("FACTORY_REQUESTER", default="nudged-shop")
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

# --- Email (back-in-stock alerts). SMTP, configured from the environment.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Nudged <donuts@nudged.local>")

# --- Back-in-stock alerts: who may ask, and how long their emails are tried.
# Alert requests one client address may send, as DRF writes rates ("10/h"); "off" for none.
ALERT_RATE_LIMIT = env("ALERT_RATE_LIMIT", default="10/h")
# New alerts (so confirmation emails) one mailbox may get per window (0: no limit).
ALERT_MAILBOX_LIMIT = env.int("ALERT_MAILBOX_LIMIT", default=5)
ALERT_MAILBOX_WINDOW = env.int("ALERT_MAILBOX_WINDOW", default=86400)
# Seconds a confirmation link stays valid.
ALERT_CONFIRM_MAX_AGE = env.int("ALERT_CONFIRM_MAX_AGE", default=259200)
# Seconds an email owed (confirmation or back-in-stock) is retried while the mail server
# fails before the alert is given up as failed.
ALERT_GIVE_UP_AFTER = env.int("ALERT_GIVE_UP_AFTER", default=86400)

# --- django-q2: the ORM broker on the same MySQL database.
Q_CLUSTER = {
    "name": "nudged",
    "orm": "default",
    # Five workers hold the loops (outbox relay, restock, DLQ, estimates, notify); the rest
    # run tasks.
    "workers": env.int("Q_WORKERS", default=7),
    # Pollers run for POLLER_RUN_SECONDS and hand over to a successor; timeout must exceed it.
    "timeout": 120,
    "retry": 180,
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 500,
    "ack_failures": True,
    "poll": 0.2,
    "label": "Worker tasks",
}
POLLER_RUN_SECONDS = env.int("POLLER_RUN_SECONDS", default=60)

# django-q2's Task model declares a partial index that MariaDB cannot build; harmless.
SILENCED_SYSTEM_CHECKS = ["models.W037"]

# Staff, and callers sending `Authorization: Bearer <this>`, see /healthz in detail (empty:
# staff only).
HEALTHZ_TOKEN = os.environ.get("HEALTHZ_TOKEN", "")
# /metrics answers only `Authorization: Bearer <this>`, and is a 404 to everyone while empty.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

LOG_LEVEL = env("LOG_LEVEL", default="INFO")


def log_format(default: str) -> str:
    """LOG_FORMAT from the environment, `default` without it: json or plain (nudged.core.logs)."""
    value = env("LOG_FORMAT", default=default)
    if value not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, not {value[:20]!r}.")
    return value


# Plain lines on a developer's machine and in tests; production says json.
LOG_FORMAT = log_format("plain")
LOGGING_CONFIG = "nudged.core.logs.configure"
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
