"""A real identity-provider stand-in on loopback: serves a JWKS (and a discovery document) over HTTP.

The test controls what it does next (`behaviour`: "ok", "500", "garbage", "stall", "refuse") and which keys
it publishes, and reads how many times each path was fetched. "refuse" closes the listening socket, so
connections are refused; setting another behaviour listens again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class JwksServer:
    """Use as a context manager; `url`, `issuer`, `jwks_url` are ready once it is entered."""

    def __init__(self, jwks: dict, *, stall_seconds: float = 3.0, issuer_override: str | None = None):
        self.jwks = jwks
        self.stall_seconds = stall_seconds
        self.issuer_override = issuer_override
        self.fetches: Counter[str] = Counter()
        self._behaviour = "ok"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.url + "/"

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def count(self, path: str = JWKS_PATH) -> int:
        with self._lock:
            return self.fetches[path]

    @property
    def behaviour(self) -> str:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: str) -> None:
        assert value in ("ok", "500", "garbage", "stall", "refuse")
        self._behaviour = value
        if value == "refuse":
            self._stop()
        elif self._server is None:
            self._start()

    def __enter__(self) -> JwksServer:
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def _start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.fetches[self.path] += 1
                behaviour = owner._behaviour
                if behaviour == "stall":
                    time.sleep(owner.stall_seconds)
                if behaviour == "500":
                    return self._send(500, b'{"error": "boom"}')
                if behaviour == "garbage":
                    return self._send(200, b"<html>not a jwks</html>")
                if self.path == JWKS_PATH:
                    return self._send(200, json.dumps(owner.jwks).encode())
                if self.path == DISCOVERY_PATH:
                    document = {"issuer": owner.issuer_override or owner.issuer, "jwks_uri": owner.jwks_url}
                    return self._send(200, json.dumps(document).encode())
                return self._send(404, b"{}")

            def _send(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a stalled answer past its timeout)

            def log_message(self, format, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.allow_reuse_address = True
        self.port = server.server_address[1]
        self._server = server
        # shutdown() waits for the loop's next poll: a short one keeps each test's teardown short.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None
