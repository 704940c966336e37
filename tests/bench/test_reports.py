"""The benchmarks' shared report helpers, and bench/orders.py's tables rendered from results."""

import pytest

from bench.orders import SIDES, report
from bench.stack import md_table, percentile, spread, write_section


def test_a_markdown_table_aligns_numbers_right_and_keeps_empty_cells() -> None:
    table = md_table(["", "a", "b"], [["x", 1, 2.5], ["y", "", 3]])
    assert table.splitlines() == [
        "| | a | b |",
        "|---|---:|---:|",
        "| x | 1 | 2.5 |",
        "| y | | 3 |",
    ]
    assert md_table(["k", "v"], [], "ll").splitlines()[1] == "|---|---|"


def test_percentiles_by_rank_and_none_without_values() -> None:
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile([], 99) is None
    assert spread([0.5, 0.1, 0.25]) == {"p50": 0.25, "p99": 0.5, "max": 0.5}
    assert spread([], (1, 50), digits=1) == {"p1": None, "p50": None}


def test_a_section_is_rewritten_between_its_markers_only(tmp_path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- results -->\nold\n<!-- /results -->\nrest\n")
    write_section(doc, "results", "new")
    assert doc.read_text() == "intro\n<!-- results -->\nnew\n<!-- /results -->\nrest\n"
    with pytest.raises(RuntimeError, match="lacks the markers"):
        write_section(doc, "capacity", "x")


def results(*, lost: int = 0, p99: float | None = 0.5) -> dict:
    medians = {
        side: {"orders_per_s": 100.0 * (i + 1), "p50_ms": 10.0, "p90_ms": 20.0, "p99_ms": 30.0}
        | {f"cpu_{part}": 1.0 for part in ("web", "mysql", "cluster", "moto", "total")}
        for i, side in enumerate(SIDES)
    }
    lag = {"orders": 1200, "not_marked_published": 0, "p50_s": 0.2, "p99_s": p99, "max_s": 0.9}
    lag["to_ops_queue"] = {"p50_s": 0.3, "p99_s": 0.6, "max_s": None}
    events = {"orders": 1200, "lost": lost, "distinct_event_ids": 1200, "duplicate_deliveries": 0}
    rounds = {side: [{"orders_per_s": 99.6}, {"orders_per_s": 101.0}] for side in SIDES}
    sellout = {"prod": {"units_ordered": 40, "stock": 40, "arrived": 0, "refused": 7}}
    summary = {"medians": medians, "relay_lag": lag, "events": events, "failed_requests": 2}
    summary |= {"ratios": {"prod": 0.333, "api": 0.667, "events": 0.5, "p99": 1.0}}
    summary |= {"oversold_rounds": [], "rounds_checked": 9}
    return {"summary": summary, "rounds": rounds, "sellout": sellout}


def test_the_order_report_has_a_column_per_side_and_a_verdict_per_target() -> None:
    lines = report(results()).splitlines()

    assert lines[0] == "| | production defaults | limits off | baseline | events off |"
    assert "| orders/s | 100 | 200 | 300 | 400 |" in lines
    assert "| orders/s per round | 100, 101 | 100, 101 | 100, 101 | 100, 101 |" in lines
    assert "| production defaults ÷ baseline, orders/s | 0.33 | ≥ 0.75 | **FAIL** |" in lines
    assert "| p99 production defaults ÷ p99 baseline | 1.00 | ≤ 1.5 | pass |" in lines
    assert "| relay lag p99 | 0.50 s | ≤ 1 s | pass |" in lines
    assert "| events lost | 0 of 1,200 orders | 0 | pass |" in lines
    assert lines[-1].startswith("Relay lag (s) of the 1,200 orders with events on: p50 0.2, ")
    assert "until the operations queue had them: p50 0.3, p99 0.6, max —." in lines[-1]
    assert "production defaults sold 40 of 40 (0 arrived), refused 7." in lines[-1]


def test_the_order_report_fails_a_lost_event_and_says_when_nothing_was_published() -> None:
    lines = report(results(lost=3, p99=None)).splitlines()

    assert "| events lost | 3 of 1,200 orders | 0 | **FAIL** |" in lines
    assert "| relay lag p99 | none marked published | ≤ 1 s | — |" in lines
