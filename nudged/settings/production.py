"""Settings for production: secrets come from the environment, and a missing one stops the
process with one line naming it (never its value)."""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import LOG_LEVEL, env, log_format, logging_config


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} is not set; production needs it.")
    return value


DEBUG = False
# Taken as it is (see base.py): only its presence is checked, and no message shows it.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY.strip():
    raise ImproperlyConfigured("SECRET_KEY is not set; production needs it.")
ALLOWED_HOSTS = [host.strip() for host in _required("ALLOWED_HOSTS").split(",") if host.strip()]
# The factory calls this back over the internet: it must be this site's public https address.
PUBLIC_BASE_URL = _required("PUBLIC_BASE_URL").rstrip("/")
if not PUBLIC_BASE_URL.startswith("https://"):
    raise ImproperlyConfigured(
        "PUBLIC_BASE_URL must be the site's public https:// address (the factory's callbacks"
        " go there)."
    )

SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Load balancers probe over plain http, and Prometheus scrapes each web host directly.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
# Trusted only behind a proxy that sets the header itself: anyone else could claim https.
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# One JSON object per line, for a log service to search by field.
LOG_FORMAT = log_format("json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
