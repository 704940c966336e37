"""Settings for a developer machine (`make run`)."""

import os

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = os.environ.get("SECRET_KEY") or "dev-only-insecure-key-change-me-3f8a1c9e0b7d4e2a"
# Mail goes to the local SMTP sink `make run` starts (manage.py run_mail_sink): run/mail/.
MAIL_PORT = env.int("MAIL_PORT", default=8025)
EMAIL_HOST = env("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=MAIL_PORT)
