"""The django-q2 cluster's main process, stopped by a TERM that its whole process group gets.

honcho (`make run`), `kill -- -PGID` and systemd's default `KillMode=control-group` send TERM
to every process of the cluster at once. django-q2 1.11.1's sentinel dies of it at once,
asleep on its stop event, and the main process's handler then sets that event, which waits
forever for the dead sleeper to wake: the cluster never stops and is killed. Given a moment,
the handler here finds the sentinel gone and lets the main process end. A TERM to the main
process alone (systemd `KillMode=mixed`, ECS) finds the sentinel alive after that moment and
stops the cluster as django-q2 does: no new task, each loop finishing its run.
"""

import logging
import os
from time import monotonic, sleep
from types import FrameType

from django_q.cluster import Cluster

logger = logging.getLogger(__name__)

# Seconds the sentinel is given to die of a TERM the whole group got: far more than it takes.
SENTINEL_DEATH_WAIT = 1.0

_stop_cluster = Cluster.sig_handler


def _sentinel_gone(cluster: Cluster) -> bool:
    sentinel = cluster.sentinel
    if sentinel is None or not sentinel.is_alive():
        return True
    # The signal may interrupt the main process's own join just after it reaped the sentinel:
    # is_alive() then still says alive (and django-q2's stop would wait forever), but the
    # process is gone.
    try:
        os.kill(sentinel.pid, 0)
    except ProcessLookupError:
        return True
    return False


def _stop_unless_the_sentinel_died(cluster: Cluster, signum: int, frame: FrameType | None) -> None:
    deadline = monotonic() + SENTINEL_DEATH_WAIT
    while not _sentinel_gone(cluster):
        if monotonic() >= deadline:
            _stop_cluster(cluster, signum, frame)
            return
        sleep(0.05)
    logger.info("cluster stopped: its processes got signal %s with it", signum)


def install_stop_handler() -> None:
    """Make clusters created from now on stop on a TERM to their whole process group."""
    Cluster.sig_handler = _stop_unless_the_sentinel_died
