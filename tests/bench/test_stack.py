"""How the benchmarks start the system (as make run does) and read the operations queue (as
the operations team would)."""

import json
import re
from pathlib import Path

from bench.stack import BIN, ENTRIES, Config, Stack, events_in


def test_each_service_runs_its_procfile_entry_with_every_variable_it_reads(tmp_path: Path) -> None:
    url = "mysql://root@127.0.0.1/nudged_bench"
    stack = Stack(Config(tmp_path, url, 1, 2, 3, 4, redis_port=5, mail_port=6))
    for name in ENTRIES:
        command = stack.command(name)[-1]  # KeyError: not in Procfile.local
        assert set(re.findall(r"\$\{?(\w+)", command)) <= stack.env.keys(), name
    assert stack.env["PATH"].startswith(f"{BIN}:")
    assert stack.env["RUN_DIR"] == str(tmp_path)


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
