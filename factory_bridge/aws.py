"""boto3 clients and resource names for SNS/SQS, from settings."""

from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings
from django.core.signals import setting_changed

from factory_bridge.infrastructure import NAME_SETTINGS, topic_name

# A change to any of these (in tests) forgets the cached clients, ARNs and queue URLs.
AWS_SETTINGS = frozenset({"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", *NAME_SETTINGS})

# Short timeouts and few retries: a relay or poller that cannot reach AWS fails fast and backs
# off on its own schedule instead of hanging a worker.
CONNECT_TIMEOUT = 2
READ_TIMEOUT = 25
# The first try and two retries.
TOTAL_ATTEMPTS = 3
# botocore's standard mode pauses at most 2**(n-1) seconds (capped at 20) before attempt n+1.
_RETRY_PAUSE_CAP = 20
_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=READ_TIMEOUT,
    retries={"total_max_attempts": TOTAL_ATTEMPTS, "mode": "standard"},
)

# For callers that must answer quickly whatever AWS does (a metrics scrape): one attempt.
_PROBE_CONFIG = Config(
    connect_timeout=1, read_timeout=3, retries={"total_max_attempts": 1, "mode": "standard"}
)


def max_call_seconds() -> float:
    """The longest one API call can take: every attempt times out, with the pauses between."""
    pauses = sum(min(2 ** (n - 1), _RETRY_PAUSE_CAP) for n in range(1, TOTAL_ATTEMPTS))
    return TOTAL_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + pauses


@cache
def client(service: str) -> Any:
    """A boto3 client for SNS or SQS at the configured endpoint (real AWS when none is set)."""
    return _client(service, _CONFIG)


@cache
def probe_client(service: str) -> Any:
    """Like client(), but one attempt with short timeouts: for a quick look, never for work."""
    return _client(service, _PROBE_CONFIG)


def _client(service: str, config: Config) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=settings.AWS_ENDPOINT_URL,
        region_name=settings.AWS_DEFAULT_REGION,
        config=config,
    )


@cache
def account_id() -> str:
    return client("sts").get_caller_identity()["Account"]


def topic_arn(topic: str) -> str:
    return f"arn:aws:sns:{settings.AWS_DEFAULT_REGION}:{account_id()}:{topic_name(topic)}"


@cache
def queue_url(name: str) -> str:
    return client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{settings.AWS_DEFAULT_REGION}:{account_id()}:{name}"


def reset() -> None:
    """Forget cached clients and names (after a settings change)."""
    for cached in (client, probe_client, account_id, queue_url):
        cached.cache_clear()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in AWS_SETTINGS:
        reset()


def connect_signals() -> None:
    setting_changed.connect(_on_setting_changed, dispatch_uid="factory_bridge.aws")
