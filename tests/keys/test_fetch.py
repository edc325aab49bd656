"""get_json against real loopback servers: answers, failures, deadlines, redirects, size cap; is_secure_url."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.keys import fetch
from service.keys.fetch import FetchError, get_json, is_secure_url
from tests.support.factories import default_jwks
from tests.support.jwks_server import JwksServer


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer(default_jwks(), stall_seconds=2.0) as running:
        yield running


@contextlib.contextmanager
def redirecting(status: int, location: str) -> Iterator[str]:
    """A loopback server that answers every GET with `status` and `Location: location`; yields its URL."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}/.well-known/jwks.json"
    finally:
        http.shutdown()
        http.server_close()
        thread.join()


@contextlib.contextmanager
def dripping(head: bytes, drip: bytes, tail: bytes = b"", interval: float = 0.1) -> Iterator[str]:
    """A loopback server that sends `head` at once, `drip` one byte per `interval`, then `tail`, and closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                try:
                    connection.sendall(head)
                    for byte in drip:
                        if stop.wait(interval):
                            return
                        connection.sendall(bytes([byte]))
                    connection.sendall(tail)
                except OSError:
                    return  # the client gave up
            return

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/jwks.json"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_get_json_returns_the_parsed_document(server):
    assert get_json(server.jwks_url, 2.0) == default_jwks()
    assert server.count() == 1


def test_http_error_status_is_a_fetch_error_without_the_body(server):
    server.behaviour = "500"
    with pytest.raises(FetchError, match=r"^HTTP 500$") as raised:
        get_json(server.jwks_url, 2.0)
    assert "boom" not in str(raised.value)


def test_a_body_that_is_not_json_is_a_fetch_error(server):
    server.behaviour = "garbage"
    with pytest.raises(FetchError, match="not JSON") as raised:
        get_json(server.jwks_url, 2.0)
    assert "html" not in str(raised.value)


def test_a_stalled_server_is_given_up_on_after_the_timeout(server):
    server.behaviour = "stall"  # answers only after 2 s
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"0\.3 s"):
        get_json(server.jwks_url, 0.3)
    assert time.monotonic() - started < 1.5


def test_a_body_dripped_slowly_is_given_up_on_at_the_total_deadline():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
    with dripping(head, b'{"keys": []}'.ljust(64), interval=0.1) as url:
        started = time.monotonic()
        with pytest.raises(FetchError):
            get_json(url, 0.3)
        assert time.monotonic() - started < 1.0


def test_headers_dripped_slowly_are_given_up_on_at_the_total_deadline():
    # Each byte arrives well within the socket timeout, so only a total deadline stops this.
    tail = b"Content-Length: 12\r\n\r\n" + b'{"keys": []}'
    with dripping(b"HTTP/1.1 200 OK\r\n", b"X-Pad: abcdefg\r\n", tail, interval=0.1) as url:
        started = time.monotonic()
        with pytest.raises(FetchError):
            get_json(url, 0.3)
        assert time.monotonic() - started < 1.0


def test_a_refused_connection_is_a_fetch_error(server):
    server.behaviour = "refuse"
    with pytest.raises(FetchError, match="refused"):
        get_json(server.jwks_url, 2.0)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(server, status):
    with redirecting(status, server.jwks_url) as url, pytest.raises(FetchError, match=f"^HTTP {status}$"):
        get_json(url, 2.0)
    assert server.count() == 0


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/jwks.json", "file:///etc/passwd", "data:,{}", "127.0.0.1/jwks"])
def test_a_url_that_is_not_http_is_not_fetched(url):
    with pytest.raises(FetchError, match="only http"):
        get_json(url, 2.0)


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/jwks.json", "http://[::1/jwks.json"])
def test_a_malformed_url_is_a_fetch_error(url):
    with pytest.raises(FetchError):
        get_json(url, 2.0)


def test_a_body_larger_than_the_cap_is_refused():
    oversized = {"keys": [], "padding": "x" * fetch.MAX_BYTES}
    with JwksServer(oversized) as server, pytest.raises(FetchError, match="larger than"):
        get_json(server.jwks_url, 5.0)


def test_a_body_just_under_the_cap_is_read():
    document = {"keys": [], "padding": "x" * (fetch.MAX_BYTES - 100)}
    with JwksServer(document) as server:
        assert get_json(server.jwks_url, 5.0) == document


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks.json",
        "http://localhost/jwks.json",
        "http://[::1]:8080/jwks.json",
    ],
)
def test_https_or_loopback_http_is_secure(url):
    assert is_secure_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/jwks.json",
        "http://127.0.0.1.example.com/jwks.json",
        "http://localhost.example.com/jwks.json",
        "ftp://127.0.0.1/jwks.json",
        "https://",
        "https:///jwks.json",
        "",
        None,
        42,
        b"https://idp.example.com/jwks.json",
        "http://[::1/jwks.json",  # malformed: must answer False, not raise
    ],
)
def test_plain_http_elsewhere_other_schemes_and_non_strings_are_not_secure(url):
    assert not is_secure_url(url)
