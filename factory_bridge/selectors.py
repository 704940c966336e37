"""Reads of the bridge's own rows."""

from factory_bridge.models import RestockRequest


def batch_of(request: RestockRequest) -> int | None:
    """The reorder decision (the batch) a request orders: a re-order's is its original's."""
    while request.decision_id is None and request.replaces_id is not None:
        request = RestockRequest.objects.only("decision_id", "replaces_id").get(
            pk=request.replaces_id
        )
    return request.decision_id
