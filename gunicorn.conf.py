"""gunicorn reads this file from the working directory: the web server's logging, checks and
the directory where its workers keep their request metrics."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger

from nudged.logs import RedactCallbackTokens
from nudged.settings import configuration_error

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The metrics directory this master made for itself (removed when it exits).
_own_metrics_dir: list[str] = []


class RedactingLogger(Logger):
    """gunicorn's logger, with factory callback tokens shortened in the access and error logs."""

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        for log in (self.access_log, self.error_log):
            log.addFilter(RedactCallbackTokens())


logger_class = RedactingLogger


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
