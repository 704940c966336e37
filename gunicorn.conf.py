"""gunicorn reads this file from the working directory: the web server's logging and checks."""

import sys

from gunicorn.glogging import Logger

from nudged.logs import AddLogContext, RedactCallbackTokens, formatter, utc_apache
from nudged.settings import configuration_error

# One of each: gunicorn runs setup() again on a reload, and a filter is added only once.
FILTERS = (RedactCallbackTokens(), AddLogContext())


def log_format() -> str:
    """The settings' LOG_FORMAT; plain when they cannot load (on_starting then says why)."""
    if configuration_error():
        return "plain"
    from django.conf import settings

    return settings.LOG_FORMAT


class NudgedLogger(Logger):
    """gunicorn's access and error logs as Django's lines: LOG_FORMAT, UTC, ids, no tokens.

    The access line keeps gunicorn's format (`access_log_format`) as its message, with its
    time in UTC as well; the ids in context are those of the request it answers.
    """

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        fmt = log_format()
        for log in (self.error_log, self.access_log):
            for log_filter in FILTERS:
                log.addFilter(log_filter)
            for handler in log.handlers:
                access = log is self.access_log and fmt == "plain"
                handler.setFormatter(formatter(fmt, fmt="%(message)s" if access else None))

    def now(self) -> str:
        return utc_apache()


logger_class = NudgedLogger


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Stop before any worker starts when the settings cannot load, with their one-line reason."""
    error = configuration_error()
    if error:
        server.log.error(error)
        sys.exit(1)
