"""gunicorn's logger with the service's formats: `logger_class` in gunicorn.conf.py.

With LOG_FORMAT=json the access log is one JSON object per request (method, path without the query
string, status, duration in ms, request id, the auth failure code when there was one, and for a forward-auth
check its convention and the original method and path); with text it
is gunicorn.conf.py's `access_log_format`. gunicorn's own lines get the service's format and the same
token scrubbing as the service's lines.
"""

from __future__ import annotations

import os
import traceback

from gunicorn.glogging import Logger

from service.constants import FORWARDED_ENV
from service.ops.logs import AUTH_ERROR_ENV, ContextFilter, formatter, scrub
from service.ops.request_id import HEADER

_HEADER = HEADER.lower()


class ServiceLogger(Logger):
    """gunicorn's Logger in LOG_FORMAT; gunicorn.conf.py picks the subclass with `logger_for`."""

    log_format = "json"

    def setup(self, cfg) -> None:
        super().setup(cfg)
        self._json = self.log_format == "json"
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if self._json or log is self.error_log:  # a text access line is already formatted
                    handler.setFormatter(formatter(self.log_format))
                if not any(isinstance(f, ContextFilter) for f in handler.filters):
                    handler.addFilter(ContextFilter())

    def access(self, resp, req, environ, request_time) -> None:
        if not self._json:
            return super().access(resp, req, environ, request_time)  # text: cfg.access_log_format
        if not self.access_log_enabled:
            return
        try:
            self._json_access(resp, environ, request_time)
        except Exception:  # as gunicorn's own access(): a line that cannot be made never stops the response
            self.error(traceback.format_exc())

    def _json_access(self, resp, environ, request_time) -> None:
        fields = {
            "method": environ.get("REQUEST_METHOD"),
            "path": scrub(environ.get("PATH_INFO") or ""),  # a client may put anything in a path, tokens too
            "status": resp.status_code,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": scrub(environ.get("HTTP_USER_AGENT") or "-"),
            "pid": os.getpid(),
        }
        code = environ.get(AUTH_ERROR_ENV)
        if code:
            fields["auth_error"] = code
        forwarded = environ.get(FORWARDED_ENV)
        if forwarded is not None:  # a forward-auth check: the request it was about (path without the query)
            convention, method, path = forwarded
            fields.update(forward_auth=convention, original_method=method, original_path=scrub(path))
        request_id = next((value for name, value in resp.headers if name.lower() == _HEADER), "-")
        self.access_log.info("request", extra={"fields": fields, "request_id": request_id})


def logger_for(log_format: str) -> type[ServiceLogger]:
    """The `logger_class` for LOG_FORMAT ("json" or "text")."""
    return type("ServiceLogger", (ServiceLogger,), {"log_format": log_format})
