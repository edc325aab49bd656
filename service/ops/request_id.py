"""Request ids: honour a client's `X-Request-ID` when it is short and plain, else make one; echo it back.

The id goes on `req.context.request_id`, on the response, and on every log line written while the request
is served (through a context variable that `service.ops.logs` reads).
"""

from __future__ import annotations

import itertools
import re
import uuid
from contextvars import ContextVar

import falcon

HEADER = "X-Request-ID"
current: ContextVar[str] = ContextVar("request_id", default="-")

# Letters, digits and . _ : - only, at most 128: enough for UUIDs and tracing ids, and nothing that could
# forge a log line or a header.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Generated ids are a per-process random prefix and a counter: unique, and cheaper than a UUID each."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        incoming = req.get_header(HEADER)
        request_id = incoming if incoming and _ACCEPTED.fullmatch(incoming) else f"{self._prefix}-{next(self._counter)}"
        req.context.request_id = request_id
        current.set(request_id)
        resp.set_header(HEADER, request_id)
