"""The rush's instruments: a once-a-second sampler, the operations-queue consumer and a probe
of the AWS endpoint's own throughput.

They reach the database directly and the AWS endpoint past the outage proxy, so a drill that
takes the app's endpoint down does not blind them; they use plain boto3 calls that work the
same against moto, any SNS/SQS-compatible endpoint and real AWS.
"""

import contextlib
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from bench.rush_stack import connect

SQL_PRODUCTS = "SELECT * FROM inventory_product WHERE sku IN %s"
SQL_OUTBOX = (
    "SELECT COUNT(*), MIN(created_at) FROM factory_bridge_outboxevent WHERE published_at IS NULL"
)
SQL_RESTOCKS = (
    "SELECT p.sku, r.status, COUNT(*), SUM(r.quantity) FROM factory_bridge_restockrequest r "
    "JOIN inventory_product p ON p.id = r.product_id GROUP BY p.sku, r.status"
)
OPEN_RESTOCKS = ("pending", "requested")
SQL_DEAD = "SELECT COUNT(*) FROM factory_bridge_failedmessage WHERE status = 'dead'"
# django-q2's ORM broker: tasks queued and not yet taken by a worker (relays, poller handovers).
SQL_TASKS = "SELECT COUNT(*) FROM django_q_ormq"


def aws_clients(endpoint: str | None, env: dict[str, str]) -> tuple[Any, Any]:
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=env.get("AWS_DEFAULT_REGION", "ap-northeast-2"),
    )
    config = Config(connect_timeout=2, read_timeout=15, retries={"max_attempts": 3})
    return (
        session.client("sns", endpoint_url=endpoint, config=config),
        session.client("sqs", endpoint_url=endpoint, config=config),
    )


def queue_counts(sqs: Any, url: str) -> dict[str, int]:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return {
        "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }


def in_production(product: dict[str, Any], open_units: int) -> int:
    """Units ordered and not arrived: the product's own count where it keeps one, else the
    quantities of its open restock requests."""
    return int(product["on_order"]) if "on_order" in product else open_units


class Sampler(threading.Thread):
    """Every second: stock and units in production per product, outbox backlog, restock
    states and queue depths."""

    def __init__(
        self, *, database_url: str, skus: tuple[str, ...], sqs: Any, queues: dict[str, str]
    ) -> None:
        super().__init__(name="rush-sampler", daemon=True)
        self.database_url = database_url
        self.skus = skus
        self.sqs = sqs
        self.queues = queues  # label -> queue url
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._conn = None
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.time()
            sample = {"t": started, **self._database(), **self._queues()}
            with self.lock:
                self.samples.append(sample)
            self.stopping.wait(max(0.0, 1.0 - (time.time() - started)))

    def latest(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.samples[-1]) if self.samples else {}

    def _database(self) -> dict[str, Any]:
        try:
            if self._conn is None:
                self._conn = connect(self.database_url)
            cur = self._conn.cursor()
            cur.execute(SQL_PRODUCTS, (self.skus,))
            names = [d[0] for d in cur.description]
            products = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            cur.execute(SQL_OUTBOX)
            pending, oldest = cur.fetchone()
            cur.execute(SQL_RESTOCKS)
            restocks: dict[str, int] = {}
            open_units: dict[str, int] = {}
            for sku, status, n, units in cur.fetchall():
                restocks[status] = restocks.get(status, 0) + int(n)
                if status in OPEN_RESTOCKS:
                    open_units[sku] = open_units.get(sku, 0) + int(units)
            cur.execute(SQL_DEAD)
            dead = int(cur.fetchone()[0])
            cur.execute(SQL_TASKS)
            tasks = int(cur.fetchone()[0])
        except Exception as exc:  # the database may be down (MySQL drill): try again next tick
            self._drop()
            return {"db_error": str(exc)[:200]}
        return {
            "stock": {p["sku"]: int(p["stock"]) for p in products},
            "in_production": {
                p["sku"]: in_production(p, open_units.get(p["sku"], 0)) for p in products
            },
            "outbox_pending": int(pending),
            "outbox_oldest": oldest.isoformat() if oldest else None,
            "restocks": restocks,
            "dead_rows": dead,
            "task_queue": tasks,
        }

    def _queues(self) -> dict[str, Any]:
        try:
            return {"queues": {k: queue_counts(self.sqs, url) for k, url in self.queues.items()}}
        except Exception as exc:  # the endpoint may be unreachable: a gap in the timeline
            return {"queue_error": str(exc)[:200]}

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


class OpsConsumer:
    """Reads the operations queue as the operations team would: every event, deduplicated."""

    def __init__(self, *, sqs: Any, url: str, threads: int = 4) -> None:
        self.sqs = sqs
        self.url = url
        self.seen: dict[str, tuple[float, str]] = {}  # event_id -> (first receipt, type)
        self.deliveries = 0
        self.unreadable = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, name=f"rush-ops-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=20)

    def ids(self) -> set[str]:
        with self.lock:
            return set(self.seen)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                answer = self.sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=60,
                )
            except Exception:  # unreachable for a moment: count it and try again
                with self.lock:
                    self.errors += 1
                time.sleep(0.5)
                continue
            messages = answer.get("Messages", [])
            if not messages:
                continue
            now = time.time()
            with self.lock:
                for message in messages:
                    self.deliveries += 1
                    try:
                        body = json.loads(json.loads(message["Body"])["Message"])
                        event_id, kind = str(body["event_id"]), str(body.get("type", ""))
                    except (ValueError, KeyError, TypeError):
                        self.unreadable += 1
                        continue
                    self.seen.setdefault(event_id, (now, kind))
            try:
                self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
            except Exception:  # redelivered later and deduplicated by event id
                with self.lock:
                    self.errors += 1


def _queue_policy(queue_arn: str, topic_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
    )


def probe_endpoint(sns: Any, sqs: Any, *, prefix: str, messages: int = 500) -> dict[str, Any]:
    """Time the endpoint alone: PublishBatch from 1 and 4 callers, read as it arrives.

    A topic and a queue of its own, subscribed like the app's (raw delivery off), events
    shaped like the app's, two readers draining the queue while it fills (as the rush's ops
    consumer does: moto's ReceiveMessage gets slower the deeper the queue). Removed afterwards.
    """
    name = f"{prefix}-probe-{uuid.uuid4().hex[:6]}"
    topic = sns.create_topic(Name=name)["TopicArn"]
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": _queue_policy(arn, topic)})
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
    result: dict[str, Any] = {"messages_per_run": messages}
    try:
        for callers in (1, 4):
            counter = _Received()
            started = time.perf_counter()
            with ThreadPoolExecutor(callers + 2) as pool:
                readers = [pool.submit(_drain, sqs, url, counter, messages) for _ in range(2)]
                writers = [
                    pool.submit(_publish_batches, sns, topic, i, callers, messages)
                    for i in range(callers)
                ]
                for job in writers:
                    job.result()
                published = time.perf_counter() - started
                for job in readers:
                    job.result()
            read = time.perf_counter() - started
            result[f"publish_{callers}_callers_per_s"] = round(messages / published, 1)
            result[f"delivered_and_read_{callers}_callers_per_s"] = round(counter.n / read, 1)
            result[f"delivered_{callers}"] = counter.n
    finally:
        for cleanup in (
            lambda: sns.unsubscribe(SubscriptionArn=sub),
            lambda: sns.delete_topic(TopicArn=topic),
            lambda: sqs.delete_queue(QueueUrl=url),
        ):
            with contextlib.suppress(Exception):
                cleanup()
    return result


class _Received:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> int:
        with self.lock:
            self.n += n
            return self.n


def _publish_batches(sns: Any, topic: str, worker: int, workers: int, total: int) -> None:
    attributes = {
        name: {"DataType": "String", "StringValue": value}
        for name, value in {
            "EventType": "order.completed",
            "MessageAttributeProductId": "CP-502101",
            "MessageAttributeFactoryId": "FF-500293",
            "MessageAttributeProductCnt": "1",
            "MessageAttributeRequester": "nudged-shop",
        }.items()
    }
    mine = range(worker, total, workers)
    ids = list(mine)
    for start in range(0, len(ids), 10):
        entries = []
        for n in ids[start : start + 10]:
            body = {
                "event_id": str(uuid.uuid4()),
                "type": "order.completed",
                "occurred_at": "2026-01-01T00:00:00+00:00",
                "sku": "CP-502101",
                "factory_id": "FF-500293",
                "quantity": 1,
                "order_id": n,
                "status": "completed",
                "stock": 3,
            }
            entries.append(
                {"Id": str(n), "Message": json.dumps(body), "MessageAttributes": attributes}
            )
        sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)


def _drain(sqs: Any, url: str, counter: _Received, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while counter.n < expected and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not messages:
            continue
        counter.add(len(messages))
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
