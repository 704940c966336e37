"""The body Nudged posts to the legacy factory (and the factory echoes back)."""


def order_body(callback_url: str, **changes: str) -> dict[str, str]:
    return {
        "MessageGroupId": "stock-arrival-group",
        "MessageAttributeProductId": "CP-502101",
        "MessageAttributeProductCnt": "10",
        "MessageAttributeFactoryId": "FF-500293",
        "MessageAttributeRequester": "nudged-shop",
        "CallbackUrl": callback_url,
        "IdempotencyKey": "3f2c1a9e-0000-4000-8000-000000000001",
        **changes,
    }
