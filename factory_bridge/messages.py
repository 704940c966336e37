"""Reading SNS envelopes as they arrive in SQS (raw message delivery off)."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from factory_bridge.exceptions import UnreadableMessage
from inventory.events import EVENT_TYPE_ATTRIBUTE


@dataclass(frozen=True)
class Envelope:
    sns_message_id: str
    event_type: str
    attributes: dict[str, str]
    message: dict[str, Any]

    @property
    def sku(self) -> str:
        return self.attributes.get("MessageAttributeProductId", "")

    @property
    def event_id(self) -> str:
        return str(self.message.get("event_id") or self.sns_message_id)


# Longest SNS message id taken as a fingerprint (real ones are 36); longer ones are hashed.
FINGERPRINT_MAX_ID = 64


def read_envelope(body: str) -> Envelope:
    """Parse an SNS notification as SQS delivers it; UnreadableMessage if it is not one."""
    try:
        envelope = json.loads(body)
        attributes = {k: str(v["Value"]) for k, v in envelope.get("MessageAttributes", {}).items()}
        message = json.loads(envelope["Message"])
        sns_message_id = str(envelope["MessageId"])
    except RecursionError as exc:
        raise UnreadableMessage("parse error: JSON nested too deeply") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableMessage(f"parse error: not an SNS envelope ({exc!r})") from exc
    if not isinstance(message, dict):
        raise UnreadableMessage("parse error: the SNS Message is not a JSON object")
    return Envelope(
        sns_message_id=sns_message_id,
        event_type=str(attributes.get(EVENT_TYPE_ATTRIBUTE, message.get("type", ""))),
        attributes=attributes,
        message=message,
    )


def fingerprint(body: str) -> str:
    """An identity that survives redrives: the SNS message id, else a hash of the body."""
    try:
        sns_message_id = read_envelope(body).sns_message_id
    except UnreadableMessage:
        sns_message_id = ""
    if 0 < len(sns_message_id) <= FINGERPRINT_MAX_ID:
        return sns_message_id
    return "sha256:" + hashlib.sha256(body.encode(errors="replace")).hexdigest()
