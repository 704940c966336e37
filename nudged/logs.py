"""Keep factory callback tokens out of every log: a token in a log line is a key to stock.

Standard library only: gunicorn's configuration uses it before Django is loaded.
"""

import logging
import re

# The token's first characters are kept, enough to tell two callbacks apart in a log. A
# token is URL-safe base64 and colons (django.core.signing); what follows the kept part is
# the signature.
KEPT = 8
_CALLBACK_TOKEN = re.compile(rf"(/factory/callbacks/)([\w:-]{{{KEPT}}})[\w:-]+")


def redact(text: str) -> str:
    """Shorten every callback token in `text` to its first characters."""
    return _CALLBACK_TOKEN.sub(r"\1\2...", text)


class RedactCallbackTokens(logging.Filter):
    """Rewrite a record's message, traceback and stack with callback tokens shortened."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
