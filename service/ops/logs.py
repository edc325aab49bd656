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

from service.ops import request_id

AUTH_ERROR_ENV = "service.auth_error"  # WSGI environ key: the auth failure code, for the access log line
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s [request_id=%(request_id)s]"
# A JWT (three base64url segments starting with a JSON header) or whatever follows "Bearer".
_TOKEN = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?|(?i:bearer)\s+[^\s'\",]+")
_REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """`text` with anything token-like replaced."""
    return _TOKEN.sub(_REDACTED, text)


class ContextFilter(logging.Filter):
    """Adds the current request id to every record and scrubs token-like text from its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or request_id.current.get()
        message = record.getMessage()
        if "eyJ" in message or "earer" in message:
            record.msg, record.args = scrub(message), None
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


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for LOG_FORMAT ("json" or "text")."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


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
