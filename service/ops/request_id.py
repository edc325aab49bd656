"""Request ids: honour a client's `X-Request-ID` when it is short and plain, else make one; echo it back.

The id goes on `req.context.request_id`, on the response, and on every log line written while the request
is served (through a context variable that `service.ops.logs` reads; the worker serves each request in a fresh
context, service/ops/refusals.py, so the variable never outlives its request).
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

import falcon

from service.constants import REQUEST_ID_HEADER

HEADER = REQUEST_ID_HEADER
# The header's key in the WSGI environ (PEP 3333): read there, since Request.get_header builds it on every call.
_ENVIRON_KEY = "HTTP_" + HEADER.upper().replace("-", "_")
current: ContextVar[str] = ContextVar("request_id", default="-")

# Letters, digits and . _ : - only, at most 128: enough for UUIDs and tracing ids, and nothing that could
# forge a log line or a header.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class IdGenerator:
    """Ids made here: a per-process random prefix and a counter, unique and cheaper than a UUID each.

    A forked process starts a prefix of its own, so the workers of one master never hand out the same id.
    """

    def __init__(self) -> None:
        self._start()
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


new_id = IdGenerator()  # one per process: the app's ids and gunicorn's refusals' ids never collide


class RequestIdMiddleware:
    """Sets the request id of every request: the client's when plain (see `_ACCEPTED`), else `new_id()`."""

    def __init__(self, new_id: Callable[[], str] = new_id) -> None:
        self._new_id = new_id

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        incoming = req.env.get(_ENVIRON_KEY)
        request_id = incoming if incoming and _ACCEPTED.fullmatch(incoming) else self._new_id()
        req.context.request_id = request_id
        current.set(request_id)
        resp.set_header(HEADER, request_id)
