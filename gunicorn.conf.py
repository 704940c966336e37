"""gunicorn reads this file from the working directory: the web server's logging and checks."""

import sys

from gunicorn.glogging import Logger

from nudged.logs import RedactCallbackTokens
from nudged.settings import configuration_error


class RedactingLogger(Logger):
    """gunicorn's logger, with factory callback tokens shortened in the access and error logs."""

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        for log in (self.access_log, self.error_log):
            log.addFilter(RedactCallbackTokens())


logger_class = RedactingLogger


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Stop before any worker starts when the settings cannot load, with their one-line reason."""
    error = configuration_error()
    if error:
        server.log.error(error)
        sys.exit(1)
