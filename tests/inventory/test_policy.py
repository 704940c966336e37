"""The replenishment policy's arithmetic, on numbers alone."""

import math

import pytest

from inventory import policy
from inventory.models import Product


def stock(**overrides: object) -> policy.Stock:
    values = {
        "mode": Product.Mode.ADAPTIVE,
        "on_hand": 50,
        "on_order": 0,
        "rate": 2.0,
        "reorder_point": 40,
        "review": 2.0,
        "restock_quantity": 10,
        "min_quantity": 10,
        "max_quantity": 500,
    }
    return policy.Stock(**{**values, **overrides})


def test_demand_rate_moves_toward_the_window_by_its_weight():
    # 30 units over 2 s is 15/s; with a 15 s horizon the window weighs 1 - e^(-2/15).
    rate = policy.demand_rate(previous=5.0, units=30, seconds=2.0, horizon=15.0)

    weight = 1 - math.exp(-2 / 15)
    assert rate == pytest.approx(5.0 + weight * (15.0 - 5.0))


def test_demand_rate_forgets_at_the_same_pace_whatever_the_refresh_interval():
    one_step = policy.demand_rate(previous=0.0, units=40, seconds=4.0, horizon=10.0)
    two_steps = policy.demand_rate(
        previous=policy.demand_rate(previous=0.0, units=20, seconds=2.0, horizon=10.0),
        units=20,
        seconds=2.0,
        horizon=10.0,
    )

    assert one_step == pytest.approx(two_steps)


def test_demand_rate_ignores_an_empty_interval():
    assert policy.demand_rate(previous=3.0, units=5, seconds=0.0, horizon=10.0) == 3.0


def test_demand_rate_decays_without_orders():
    assert policy.demand_rate(previous=10.0, units=0, seconds=15.0, horizon=15.0) == (
        pytest.approx(10.0 * math.exp(-1))
    )


def test_lead_time_is_the_median_of_the_last_five_measured():
    samples = [9.0, 11.0, 10.0, 12.0, 10.5, 10.2]

    assert policy.lead_time(samples=samples, previous=40.0) == 10.5  # of the last five


def test_one_outlier_does_not_move_the_lead_time():
    assert policy.lead_time(samples=[10.0, 10.4, 131.0], previous=10.2) == 10.4
    assert policy.lead_time(samples=[10.0, 10.4, 9.8, 10.1, 131.0], previous=10.2) == 10.1


def test_until_three_are_measured_the_estimate_so_far_fills_in():
    assert policy.lead_time(samples=[131.0], previous=10.0) == 10.0
    assert policy.lead_time(samples=[10.0], previous=40.0) == 40.0
    assert policy.lead_time(samples=[10.0, 11.0], previous=40.0) == 11.0


def test_a_lasting_change_of_lead_time_is_followed_once_it_is_the_majority():
    assert policy.lead_time(samples=[10, 10, 10, 40, 40], previous=10.0) == 10.0
    assert policy.lead_time(samples=[10, 10, 40, 40, 40], previous=10.0) == 40.0


def test_refused_demand_counts_up_to_the_purchase_limit_or_one_order():
    assert policy.refused_demand_cap(purchase_limit=10, order_max=100) == 10
    assert policy.refused_demand_cap(purchase_limit=0, order_max=100) == 100


def test_the_ceiling_caps_units_on_order():
    wanted = policy.order(
        stock(on_hand=0, on_order=1900, reorder_point=3000, rate=100.0, ceiling=2000),
        capacity_left=None,
    )

    assert wanted.quantity == 100
    assert "capped by the ceiling of 2000 on order" in wanted.reason


def test_nothing_is_ordered_at_the_ceiling():
    full = stock(on_hand=0, on_order=2000, reorder_point=3000, rate=100.0, ceiling=2000)

    assert policy.order(full, capacity_left=None) is None


def test_reorder_point_covers_lead_time_and_review_with_a_margin():
    # 4 units/s over (10 + 2) s is 48, plus 50 %: 72.
    assert policy.reorder_point(rate=4.0, lead_time=10.0, review=2.0, safety=0.5) == 72


def test_reorder_point_is_zero_without_demand():
    assert policy.reorder_point(rate=0.0, lead_time=40.0, review=2.0, safety=0.5) == 0


def test_no_order_above_the_reorder_point():
    assert not policy.needs_order(stock(on_hand=30, on_order=10, reorder_point=40))
    assert policy.order(stock(on_hand=30, on_order=10, reorder_point=40), capacity_left=None) is (
        None
    )


def test_adaptive_orders_up_to_the_point_plus_one_review_of_demand():
    decided = policy.order(stock(on_hand=20, on_order=10, reorder_point=80), capacity_left=None)

    # Target 80 + 2/s * 2 s = 84; position 30: order 54.
    assert decided.quantity == 54
    assert "30 on hand and on order < reorder point 80" in decided.reason


def test_adaptive_orders_at_least_the_minimum():
    decided = policy.order(stock(on_hand=38, reorder_point=40, rate=0.0), capacity_left=None)

    assert decided.quantity == 10


def test_adaptive_orders_at_most_the_maximum():
    decided = policy.order(
        stock(on_hand=0, reorder_point=900, rate=20.0, max_quantity=300), capacity_left=None
    )

    assert decided.quantity == 300


def test_empty_with_nothing_on_order_orders_the_minimum_even_without_demand():
    empty = stock(on_hand=0, on_order=0, rate=0.0, reorder_point=0)

    decided = policy.order(empty, capacity_left=None)

    assert decided.quantity == 10
    assert decided.reason.startswith("empty with nothing on order")


def test_at_zero_orders_the_restock_quantity_only_when_empty_with_nothing_on_order():
    at_zero = {"mode": Product.Mode.AT_ZERO, "restock_quantity": 10, "reorder_point": 500}

    assert policy.order(stock(on_hand=1, **at_zero), capacity_left=None) is None
    assert policy.order(stock(on_hand=0, on_order=10, **at_zero), capacity_left=None) is None
    decided = policy.order(stock(on_hand=0, **at_zero), capacity_left=None)
    assert decided.quantity == 10
    assert decided.reason.startswith("at zero")


def test_factory_capacity_caps_the_order():
    decided = policy.order(stock(on_hand=0, reorder_point=100), capacity_left=25)

    assert decided.quantity == 25
    assert "capped by factory capacity (25 left)" in decided.reason


def test_a_full_factory_means_no_order_now():
    assert policy.order(stock(on_hand=0, reorder_point=100), capacity_left=0) is None


def _promised_stock(**changes: object) -> policy.Stock:
    numbers = {
        "mode": Product.Mode.ADAPTIVE,
        "on_hand": 5,
        "on_order": 20,
        "promised": 12,
        "rate": 1.0,
        "reorder_point": 18,
        "review": 2.0,
        "restock_quantity": 10,
        "min_quantity": 1,
        "max_quantity": 500,
    }
    return policy.Stock(**{**numbers, **changes})  # type: ignore[arg-type]


def test_promised_units_are_known_demand_ordered_one_for_one():
    stock = _promised_stock()

    # 5 on hand + 20 on order - 12 promised = 13 free units, below the point of 18 (its
    # safety margin is on the guessed rate only): up to 18 + 1/s × 2 s = 20, so 7 more.
    assert stock.position == 13
    assert policy.needs_order(stock)
    assert policy.order(stock, capacity_left=None).quantity == 7
    # Without the promises the same shelf and pipeline would look covered.
    assert not policy.needs_order(_promised_stock(promised=0))


def test_a_pre_order_needing_a_new_batch_adds_its_units_or_orders_nothing():
    stock = _promised_stock()

    # 4 more promised: 9 free, up to 20: 11, which holds the 4.
    assert policy.order(stock, capacity_left=None, promising=4).quantity == 11
    # Bounds that leave less room than the pre-order needs make no order at all.
    assert policy.order(_promised_stock(max_quantity=3), capacity_left=None, promising=4) is None
    assert policy.order(stock, capacity_left=3, promising=4) is None
    # A covered product still orders what a pre-order needs, at least the minimum.
    covered = _promised_stock(promised=0, min_quantity=10)
    assert policy.order(covered, capacity_left=None, promising=4).quantity == 10
