"""How the benchmarks read the operations queue: as the operations team would."""

import json

from bench.stack import events_in


def sale(order_id: int) -> dict:
    return {"event_id": f"e{order_id}", "type": "order.completed", "order_id": order_id}


def test_a_sales_batch_in_an_sns_envelope_is_its_events() -> None:
    batch = {"type": "sales.batch", "events": [sale(1), sale(2)]}
    envelope = {"Type": "Notification", "MessageId": "m1", "Message": json.dumps(batch)}
    assert events_in(json.dumps(envelope)) == [sale(1), sale(2)]


def test_a_stock_event_is_one_event_raw_or_in_an_envelope() -> None:
    event = {"event_id": "s1", "type": "stock.low", "sku": "CP-502101"}
    envelope = {"Type": "Notification", "Message": json.dumps(event)}
    assert events_in(json.dumps(envelope)) == [event]
    assert events_in(json.dumps(event)) == [event]
    assert events_in(json.dumps({"type": "sales.batch", "events": [sale(3)]})) == [sale(3)]
