"""Every process (web, cluster, commands) uses production settings unless told otherwise.

Development tooling sets DJANGO_SETTINGS_MODULE=nudged.settings.local (`make run`) or
nudged.settings.test (`make test`); a production process missing a variable stops at once.
"""

import os

DEFAULT_SETTINGS_MODULE = "nudged.settings.production"


def configuration_error() -> str | None:
    """Load the settings; return their one-line reason for failing, or None."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE)
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018  (loads the settings module)
    except ImproperlyConfigured as exc:
        return f"{os.environ['DJANGO_SETTINGS_MODULE']}: {exc}"
    return None
