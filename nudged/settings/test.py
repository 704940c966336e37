"""Settings for the test suite: real MySQL, real moto server started by fixtures."""

from .base import *  # noqa: F403
from .base import Q_CLUSTER, env

DEBUG = False
SECRET_KEY = "test-only-key-5b2c7e9a1d3f4a6b8c0e"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Tasks run inline so a test sees their effect; the relay runs right after commit.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
OUTBOX_RELAY_DEBOUNCE = 0.0
AWS_ENDPOINT_URL = env("AWS_ENDPOINT_URL", default="http://127.0.0.1:4599")
SQS_WAIT_TIME = 1
# Each process counts its own rate limits, unless a test asks for the session's Redis
# (the `limit_store` fixture).
CACHE_URL = "locmemcache://"
CACHES = {**CACHES, "default": env.cache_url_config(CACHE_URL)}  # noqa: F405
# Limits are switched on by the tests about them; the rest place orders freely.
PURCHASE_LIMIT = 0
ORDER_RATE_LIMIT = "off"
ALERT_RATE_LIMIT = "off"
ALERT_MAILBOX_LIMIT = 0
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests read what they just wrote.
PRODUCT_LIST_MAX_AGE = 0
