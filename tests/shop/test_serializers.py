"""The order body's fast path takes exactly what the serializer takes, and nothing else."""

from typing import Any

import pytest
from rest_framework.exceptions import ValidationError

from shop.serializers import OrderInputSerializer

BODIES: list[Any] = [
    {"sku": "CP-502101", "quantity": 1},
    {"sku": "CP-502101", "quantity": 100},
    {"sku": "CP-502101", "quantity": 101},
    {"sku": "CP-502101", "quantity": 0},
    {"sku": "CP-502101", "quantity": -1},
    {"sku": "CP-502101", "quantity": True},
    {"sku": "CP-502101", "quantity": 2.0},
    {"sku": "CP-502101", "quantity": 2.5},
    {"sku": "CP-502101", "quantity": "3"},
    {"sku": "CP-502101", "quantity": None},
    {"sku": "CP-502101"},
    {"quantity": 1},
    {"sku": " CP-502101 ", "quantity": 1},
    {"sku": "", "quantity": 1},
    {"sku": "   ", "quantity": 1},
    {"sku": "X" * 32, "quantity": 1},
    {"sku": "X" * 33, "quantity": 1},
    {"sku": "CP\x00502101", "quantity": 1},
    {"sku": "CP-\tTAB", "quantity": 1},
    {"sku": "도너츠", "quantity": 1},
    {"sku": 502101, "quantity": 1},
    {"sku": ["CP-502101"], "quantity": 1},
    {"sku": "CP-502101", "quantity": 1, "note": "extra keys are ignored"},
    ["CP-502101", 1],
    "CP-502101",
    None,
]


def serializer_answer(body: Any) -> Any:
    serializer = OrderInputSerializer(data=body)
    if serializer.is_valid():
        return dict(serializer.validated_data)
    return serializer.errors


def clean_answer(body: Any) -> Any:
    try:
        return dict(OrderInputSerializer.clean(body))
    except ValidationError as error:
        return error.detail


@pytest.mark.parametrize("body", BODIES, ids=repr)
def test_clean_answers_what_the_serializer_answers(body, settings):
    settings.ORDER_MAX_QUANTITY = 100

    assert clean_answer(body) == serializer_answer(body)


def test_the_fast_path_is_taken_for_an_ordinary_order(monkeypatch):
    def built(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the serializer was built")

    monkeypatch.setattr(OrderInputSerializer, "__init__", built)

    assert OrderInputSerializer.clean({"sku": "CP-502101", "quantity": 2}) == {
        "sku": "CP-502101",
        "quantity": 2,
        "backorder": False,
    }
