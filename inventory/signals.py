"""What stock decisions announce; the event pipeline listens (inventory imports no app above it).

Each is sent inside the transaction that made it true, so a receiver that writes to the
outbox commits with it or not at all.
"""

from django.dispatch import Signal

# A product ran out: `state` (StockState), once per depletion.
depleted = Signal()
# More was ordered: `decision` (ReorderDecision), `sku` and `factory_code`.
reorder_decided = Signal()
# Refused and limited orders since the last refresh: `counts` (list of RefusalCount).
refusals_counted = Signal()
# Pre-orders' promises (`promises`, list of Promise): served from an arrival, moved to
# another batch (its `batch` and `ready_by` are the new ones), or cancelled (its `reason`).
promises_kept = Signal()
promises_moved = Signal()
promises_cancelled = Signal()
