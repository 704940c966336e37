"""The product's row keeps what its restocks mean, exact through every move of a restock:
the units in production (`incoming`), when the factory accepted the latest of them, and the
status of the latest restock. Each step is checked against the restocks themselves."""

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from django.db import connection
from django.utils import timezone

from factory_bridge.factory import FactoryError, ManufactureOrder
from factory_bridge.messages import Envelope
from factory_bridge.models import RestockRequest
from factory_bridge.services.restock.abandon import abandon
from factory_bridge.services.restock.callback import receive_callback
from factory_bridge.services.restock.factory_order import order_restock
from factory_bridge.services.restock.sweep import SweepReport, reorder_overdue
from inventory import events
from inventory.models import Product, ReorderDecision

pytestmark = pytest.mark.usefixtures("no_events")

Status = RestockRequest.Status


class ScriptedFactory:
    """The factory as a test scripts it: accepts, refuses, or calls back before it answers."""

    refuse = False
    before_answer: Callable[[ManufactureOrder], None] | None = None

    def order(self, order: ManufactureOrder) -> str:
        if ScriptedFactory.refuse:
            raise FactoryError("status", "refused", status=500)
        if ScriptedFactory.before_answer is not None:
            ScriptedFactory.before_answer(order)
        return f"job-{order.idempotency_key}"


@pytest.fixture(autouse=True)
def scripted_factory(settings) -> Iterator[type[ScriptedFactory]]:
    settings.FACTORY_CLIENT = f"{__name__}.ScriptedFactory"
    yield ScriptedFactory
    ScriptedFactory.refuse = False
    ScriptedFactory.before_answer = None


def shown(product: Product) -> tuple[int, datetime | None, str]:
    row = Product.objects.get(pk=product.pk)
    return row.incoming, row.restock_requested_at, row.restock_status


def truth(product: Product) -> tuple[int, datetime | None, str]:
    """The same, read from the restocks as inventory once did."""
    restocks = list(RestockRequest.objects.filter(product=product))
    in_production = [r for r in restocks if r.status == Status.REQUESTED]
    latest = max(restocks, key=lambda r: (r.created_at, r.pk), default=None)
    return (
        sum(r.quantity for r in in_production),
        max((r.requested_at for r in in_production if r.requested_at), default=None),
        latest.status if latest else "",
    )


def envelope(product: Product, key: str, decision: ReorderDecision | None = None) -> Envelope:
    message: dict[str, object] = {"event_id": key}
    if decision is not None:
        message["decision_id"] = decision.pk
    return Envelope(
        sns_message_id=f"sns-{key}",
        event_type=events.STOCK_LOW if decision else events.STOCK_DEPLETED,
        attributes={"MessageAttributeProductId": product.sku},
        message=message,
    )


def deplete(product: Product, key: str = "depletion-1") -> RestockRequest:
    """The product sells out and the restock consumer takes its depletion."""
    Product.objects.filter(pk=product.pk).update(stock=0, depleted_at=timezone.now())
    order_restock(envelope=envelope(product, key), sqs_message_id=f"sqs-{key}")
    return RestockRequest.objects.get(depletion_key=key)


def reorder(product: Product, key: str, quantity: int) -> RestockRequest:
    """Another batch decided for the product, ordered while the first is in production."""
    decision = ReorderDecision.objects.create(
        product=product,
        quantity=quantity,
        mode=Product.Mode.ADAPTIVE,
        reason="test",
        on_hand=0,
        on_order=0,
        demand_rate=1.0,
        lead_time=40.0,
        reorder_point=5,
    )
    order_restock(envelope=envelope(product, key, decision), sqs_message_id=f"sqs-{key}")
    return RestockRequest.objects.get(depletion_key=key)


def call_back(request: RestockRequest) -> None:
    body = {
        "MessageAttributeProductId": request.product.sku,
        "MessageAttributeProductCnt": str(request.quantity),
        "MessageAttributeFactoryId": request.factory.code,
    }
    receive_callback(restock_id=request.pk, body=body)


def fresh(request: RestockRequest) -> RestockRequest:
    return RestockRequest.objects.get(pk=request.pk)


def test_accepted_units_are_incoming_until_they_arrive(product):
    request = deplete(product)

    assert shown(product) == (request.quantity, request.requested_at, Status.REQUESTED)
    assert request.quantity > 0
    assert shown(product) == truth(product)

    call_back(request)

    assert shown(product) == (0, None, Status.FULFILLED) == truth(product)


def test_a_refused_order_is_not_incoming_until_the_sweep_places_it(product, scripted_factory):
    scripted_factory.refuse = True
    with pytest.raises(FactoryError):
        deplete(product)
    request = RestockRequest.objects.get()

    assert shown(product) == (0, None, Status.PENDING) == truth(product)

    scripted_factory.refuse = False
    RestockRequest.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())
    assert reorder_overdue() == SweepReport(placed=[request.pk])

    request = fresh(request)
    assert shown(product) == (request.quantity, request.requested_at, Status.REQUESTED)
    assert shown(product) == truth(product)


def test_refused_to_the_cap_it_fails_and_a_redrive_orders_it_again(
    product, scripted_factory, settings
):
    settings.FACTORY_MAX_REORDERS = 1
    scripted_factory.refuse = True
    with pytest.raises(FactoryError):
        deplete(product)
    request = RestockRequest.objects.get()
    RestockRequest.objects.filter(pk=request.pk).update(next_attempt_at=timezone.now())

    assert reorder_overdue().failed == [request.pk]
    assert shown(product) == (0, None, Status.FAILED) == truth(product)

    # Staff redrive its dead depletion: the same message, now accepted.
    scripted_factory.refuse = False
    order_restock(envelope=envelope(product, "depletion-1"), sqs_message_id="sqs-again")

    request = fresh(request)
    assert request.status == Status.REQUESTED
    assert shown(product) == (request.quantity, request.requested_at, Status.REQUESTED)
    assert shown(product) == truth(product)


def test_a_redriven_restock_the_factory_refuses_again_is_waiting_for_it(product, scripted_factory):
    scripted_factory.refuse = True
    with pytest.raises(FactoryError):
        deplete(product)
    request = RestockRequest.objects.get()
    abandon(body=sns_body(product, "depletion-1"))
    assert shown(product) == (0, None, Status.FAILED)

    with pytest.raises(FactoryError):
        order_restock(envelope=envelope(product, "depletion-1"), sqs_message_id="sqs-again")

    assert fresh(request).status == Status.PENDING
    assert shown(product) == (0, None, Status.PENDING) == truth(product)


def test_an_overdue_restock_leaves_production_and_its_reorder_enters_it(product, settings):
    first = deplete(product)
    settings.FACTORY_CALLBACK_TIMEOUT = 0  # every restock in production is overdue now

    report = reorder_overdue()

    [second] = RestockRequest.objects.filter(replaces=first)
    assert report == SweepReport(reordered=[second.pk], placed=[second.pk])
    second = fresh(second)
    assert shown(product) == (second.quantity, second.requested_at, Status.REQUESTED)
    assert shown(product) == truth(product)

    # The first one's callback comes late: stock arrives, the reorder is still in production.
    call_back(first)

    assert fresh(first).status == Status.FULFILLED
    assert shown(product) == (second.quantity, second.requested_at, Status.REQUESTED)
    assert shown(product) == truth(product)

    call_back(second)

    assert shown(product) == (0, None, Status.FULFILLED) == truth(product)


def test_an_overdue_restock_at_the_cap_is_given_up(product, settings):
    request = deplete(product)
    settings.FACTORY_CALLBACK_TIMEOUT = 0
    settings.FACTORY_MAX_REORDERS = 0

    assert reorder_overdue().failed == [request.pk]

    assert shown(product) == (0, None, Status.FAILED) == truth(product)


def sns_body(product: Product, key: str) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": f"sns-{key}",
            "Message": json.dumps({"event_id": key}),
            "MessageAttributes": {
                "MessageAttributeProductId": {"Type": "String", "Value": product.sku},
                "EventType": {"Type": "String", "Value": events.STOCK_DEPLETED},
            },
        }
    )


def test_a_restock_staff_discarded_fails(product, scripted_factory):
    scripted_factory.refuse = True
    with pytest.raises(FactoryError):
        deplete(product)

    abandon(body=sns_body(product, "depletion-1"))

    assert RestockRequest.objects.get().status == Status.FAILED
    assert shown(product) == (0, None, Status.FAILED) == truth(product)


def test_a_callback_before_the_factory_answers_never_counts_as_incoming(product, scripted_factory):
    def callback_first(order: ManufactureOrder) -> None:
        call_back(RestockRequest.objects.get(depletion_key=order.idempotency_key))

    scripted_factory.before_answer = callback_first

    request = deplete(product)

    assert request.status == Status.FULFILLED
    assert shown(product) == (0, None, Status.FULFILLED) == truth(product)


def test_the_newer_of_two_in_production_arriving_first_leaves_the_older_one(product):
    older = deplete(product)
    newer = reorder(product, "reorder-1", quantity=7)
    assert newer.requested_at > older.requested_at
    assert shown(product) == (older.quantity + 7, newer.requested_at, Status.REQUESTED)

    call_back(newer)

    assert shown(product) == (older.quantity, older.requested_at, Status.FULFILLED)
    assert shown(product) == truth(product)


@pytest.mark.django_db(transaction=True)
def test_callbacks_and_the_sweep_racing_on_one_product_keep_its_row_exact(product, settings):
    """Three callbacks and the overdue sweep, all on the same restocks, released together."""
    first = deplete(product)
    others = [reorder(product, f"reorder-{n}", quantity=n) for n in (2, 3, 4)]
    settings.FACTORY_CALLBACK_TIMEOUT = 0  # the sweep takes all four for overdue
    assert shown(product) == (first.quantity + 9, others[-1].requested_at, Status.REQUESTED)

    jobs: list[Callable[[], object]] = [
        *(lambda r=r: call_back(r) for r in [first, *others[:2]]),
        reorder_overdue,
    ]
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException | None] = [None] * len(jobs)

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            jobs[n]()
        except BaseException as exc:
            errors[n] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == [None] * len(jobs)
    statuses = set(RestockRequest.objects.values_list("status", flat=True))
    assert Status.OVERDUE in statuses or Status.FULFILLED in statuses
    assert shown(product) == truth(product)
