"""Log formats for the service's lines and gunicorn's: JSON objects one per line (LOG_FORMAT=json), or text.

Every line carries the request id of the request being served ("-" outside one), and nothing that looks
like a token survives into a log line: gunicorn quotes malformed header lines in its errors, bearer
tokens included, so lines are scrubbed before they are written.
"""

from __future__ import annotations

import json
import logging
import re
import time

from service.constants import AUTH_ERROR_ENV  # noqa: F401  (re-exported)
from service.ops import request_id

TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s [request_id=%(request_id)s]"
# What a credential looks like in a line, schemes and names in any case: whatever follows "Authorization:" or
# "Authorization <scheme>" (an opaque token, a Basic pair; the name is kept), a JWT (a JSON header's base64url
# starts "eyJ": access tokens, DPoP proofs), a word after the Bearer scheme (not a challenge's `realm="..."`), and
# a token68 of 20 or more characters after the DPoP scheme, so that ordinary lines ("DPoP proof was already
# used", "Authorization header must be Bearer + token") stay as they are.
_TOKEN = re.compile(
    r"(?P<name>(?i:authorization)['\"]?(?:\s*[:=]\s*['\"]?|\s+(?=(?i:bearer|dpop|basic)\s)))"
    r"(?:[A-Za-z][\w-]*\s+)?[^\s'\",]+"
    r"|eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?"
    r"|(?i:bearer)\s+(?![\w-]+=\")[^\s'\",]*\w[^\s'\",]*"
    r"|(?i:dpop)\s+[\w.~+/-]{20,}=*"
)
_REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """`text` with anything token-like replaced by "[redacted]" ("Authorization: [redacted]" keeps the name)."""
    # Every match holds one of these, lowercased; a line with none (most lines) skips the substitution.
    lowered = text.lower()
    if not ("bearer" in lowered or "eyj" in lowered or "dpop" in lowered or "authorization" in lowered):
        return text
    return _TOKEN.sub(r"\g<name>" + _REDACTED, text)


class ContextFilter(logging.Filter):
    """Adds the current request id to every record and scrubs token-like text from its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or request_id.current.get()
        message = record.getMessage()
        scrubbed = scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, request_id, plus `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        document.update(getattr(record, "fields", {}))
        if record.exc_info:
            document["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with a record's traceback scrubbed as JsonFormatter scrubs it."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei) -> str:
        return scrub(super().formatException(ei))


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for LOG_FORMAT ("json" or "text")."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send the `service` loggers to stderr at `level` (a LOG_LEVELS name) in `log_format`."""
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter())
    logger.addHandler(handler)
