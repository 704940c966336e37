"""gunicorn reads this file from the working directory: the web server's logging, checks, the
proxies it trusts and the directory where its workers keep their request metrics."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger

from nudged.core.logs import AddLogContext, RedactCallbackTokens, formatter, utc_apache
from nudged.settings import configuration_error

# One of each: gunicorn runs setup() again on a reload, and a filter is added only once.
FILTERS = (RedactCallbackTokens(), AddLogContext())
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The metrics directory this master made for itself (removed when it exits).
_own_metrics_dir: list[str] = []


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


def trusted_proxies() -> str:
    """The settings' TRUSTED_PROXIES for forwarded_allow_ips; none when they cannot load."""
    if configuration_error():
        return ""
    from django.conf import settings

    return ",".join(settings.TRUSTED_PROXIES)


# Forwarding headers (X-Forwarded-Proto ...) only from the proxies Django trusts with
# X-Forwarded-For: by default gunicorn would trust 127.0.0.1, whoever Nudged trusts.
forwarded_allow_ips = trusted_proxies()


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Stop before any worker starts when the settings cannot load, with their one-line reason;
    then give the workers an empty directory for their request metrics."""
    error = configuration_error()
    if error:
        server.log.error(error)
        sys.exit(1)
    _prepare_metrics_dir()


def _prepare_metrics_dir() -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR (or make a temporary one) before the first worker forks.

    Every worker inherits the variable and writes its request metrics there (prometheus-client's
    multiprocess mode); /metrics adds up the files of every worker, live or gone. Files left by
    an earlier run would be counted again, so they go first. prometheus-client is not imported
    here before the variable is set: forked workers would inherit its single-process mode.
    """
    path = os.environ.get(METRICS_DIR)
    if not path:
        path = tempfile.mkdtemp(prefix="nudged-metrics-")
        _own_metrics_dir.append(path)
        os.environ[METRICS_DIR] = path
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Drop a dead worker's live gauges (its counters and histograms keep counting)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    for path in _own_metrics_dir:
        shutil.rmtree(path, ignore_errors=True)
