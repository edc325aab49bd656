from __future__ import annotations

import os
import re

import falcon.testing
import pytest

from service.app import create_app
from service.ops import request_id
from tests.support.factories import FakeClock, hs_settings


@pytest.fixture
def client():
    return falcon.testing.TestClient(create_app(hs_settings(), clock=FakeClock()))


@pytest.mark.parametrize("incoming", ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "trace:span.1_x", "a" * 128])
def test_a_plain_incoming_request_id_is_honoured(client, incoming):
    for path in ("/ping", "/secured/ping", "/missing"):
        assert client.simulate_get(path, headers={"X-Request-ID": incoming}).headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["", "a" * 129, "has space", "new\\nline", 'quote"', "semi;colon", "é"])
def test_an_unsafe_incoming_request_id_is_replaced(client, incoming):
    returned = client.simulate_get("/ping", headers={"X-Request-ID": incoming}).headers["x-request-id"]
    assert returned != incoming
    assert returned


def test_generated_request_ids_are_unique(client):
    ids = {client.simulate_get("/ping").headers["x-request-id"] for _ in range(50)}
    assert len(ids) == 50


def test_browsers_may_read_the_request_id(client):
    result = client.simulate_get("/secured/ping", headers={"Origin": "https://app.example.com"})
    assert result.status_code == 401
    assert "x-request-id" in result.headers["access-control-expose-headers"].lower()


def test_a_forked_worker_makes_ids_with_a_prefix_of_its_own():
    # gunicorn's master imports this module before it forks the workers: they must not share its prefix.
    parent = request_id.new_id()
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its id and leave at once, running no test machinery
        os.write(writing, request_id.new_id().encode())
        os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    assert child.rsplit("-", 1)[0] != parent.rsplit("-", 1)[0]
    assert request_id.new_id().rsplit("-", 1)[0] == parent.rsplit("-", 1)[0]


def test_generated_ids_are_a_prefix_and_a_counter():
    first, second = request_id.new_id(), request_id.new_id()
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9]+", first)
    assert int(second.rsplit("-", 1)[1]) == int(first.rsplit("-", 1)[1]) + 1
