import pytest

from inventory.models import Product


@pytest.fixture
def donuts(factory) -> list[Product]:  # type: ignore[no-untyped-def]
    """Three donuts for baskets, ten of each on the shelf, priced 1,000 × their number."""
    return [
        Product.objects.create(
            sku=f"CP-{n}", name=f"Donut {n}", price=1000 * n, stock=10, factory=factory
        )
        for n in (1, 2, 3)
    ]
