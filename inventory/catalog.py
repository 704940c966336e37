"""The demo catalog: the seed's 부산도너츠 and a few other Nudged donuts."""

from typing import Any

FACTORIES: list[dict[str, Any]] = [
    {"code": "FF-500293", "name": "부산도너츠 공장", "manager_email": "dob_factory@codeatates.com"},
    {
        "code": "FF-500294",
        "name": "노티드 서울 공장",
        "manager_email": "seoul_factory@nudged.example",
    },
]

PRODUCTS: list[dict[str, Any]] = [
    {
        "sku": "CP-502101",
        "name": "부산도너츠",
        "price": 19900,
        "stock": 3,
        "factory": "FF-500293",
        "description": "The original: glazed, from the Busan factory.",
    },
    {
        "sku": "CP-502102",
        "name": "우유 생크림 도넛",
        "price": 3800,
        "stock": 20,
        "factory": "FF-500294",
        "description": "Milk cream filled, Nudged's signature.",
    },
    {
        "sku": "CP-502103",
        "name": "얼그레이 도넛",
        "price": 4200,
        "stock": 12,
        "factory": "FF-500294",
        "description": "Earl Grey cream, lightly bitter.",
    },
    {
        "sku": "CP-502104",
        "name": "클래식 바닐라 도넛",
        "price": 3500,
        "stock": 15,
        "factory": "FF-500294",
        "description": "Vanilla custard, the classic.",
    },
    {
        "sku": "CP-502105",
        "name": "제주 말차 도넛",
        "price": 4500,
        "stock": 0,
        "factory": "FF-500293",
        "description": "Jeju matcha cream; often sold out.",
    },
]
