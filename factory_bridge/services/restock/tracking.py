"""What each move of a restock changes on its product's row, where inventory reads it."""

from django.db.models import Max

from factory_bridge.models import RestockRequest
from inventory.models import Product
from inventory.services import restock_moved


def lock_product(product_id: int) -> None:
    """Lock the product's row before its restocks' rows, as every restock move does."""
    list(Product.objects.select_for_update().filter(pk=product_id).values_list("pk"))


def track(*, product_id: int, restock_id: int, status: str, incoming: int = 0) -> None:
    """Keep the product's row in step with restock `restock_id`, just moved to `status`.

    `incoming`: the units the move took into production, or out of it (negative). Call in
    the transaction that moved it, after lock_product: every move into or out of production
    holds that lock, so the latest acceptance read here stays true until the commit.
    """
    since = None
    if incoming:
        in_production = RestockRequest.objects.filter(
            product_id=product_id, status=RestockRequest.Status.REQUESTED
        )
        since = in_production.aggregate(at=Max("requested_at"))["at"]
    restock_moved(
        product_id=product_id,
        restock_id=restock_id,
        status=status,
        incoming=incoming,
        in_production_since=since,
    )
