"""Restocking, one module per job.

- `consumer`: the restock queue's consumer; each depletion or reorder message is handed on.
- `factory_order`: one factory order per reorder decision, under a claim on its request.
- `callback`: the factory's signed callback adds the stock once.
- `sweep`: the minute sweep retries refused orders and re-orders overdue ones, up to the cap.
- `abandon`: a restock given up (at the cap, or its message discarded by staff).
- `tracking`: what each move of a restock changes on its product's row (`incoming`, the
  latest restock's status), in the move's transaction.
"""
