"""`python -m service check` as a deploy gate, run as a user runs it, against real dependencies on loopback.

Exit 3 with one line on stderr naming the variable, the URL or host tried and why, whenever a dependency does not
answer; 0 only when every one did. Nothing here reaches past loopback: the one name lookup runs in a network
namespace of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis as redis_py

from service.startup import UNANSWERED
from tests.support import ROOT
from tests.support.factories import AUDIENCE, SECRET, default_jwks, jwks
from tests.support.jwks_server import DISCOVERY_PATH, JWKS_PATH, JwksServer
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer, redis_server

FETCH_TIMEOUT = "0.5"  # JWT_JWKS_TIMEOUT, seconds: a stalled provider is given up on after this
RUN_TIMEOUT = 60.0  # seconds: a safety net against a hung check, far above anything it waits for
RIGHT_PASSWORD = "right-Pa55word-c41e"
WRONG_PASSWORD = "wrong-Pa55word-09bd"
ERROR = "service: dependency error: "


def check(environ: dict[str, str], *, wrapper: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m service check` with exactly `environ`, optionally run under `wrapper` (unshare, setpriv)."""
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "service", "check"],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def refused(result: subprocess.CompletedProcess) -> str:
    """The one line a failed check printed, after asserting it exited 3 and printed nothing else."""
    assert result.returncode == UNANSWERED == 3, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR)
    return lines[0]


def remote_keys(**environ: str) -> dict[str, str]:
    return {"JWT_AUDIENCE": AUDIENCE, "JWT_JWKS_TIMEOUT": FETCH_TIMEOUT, **environ}


def hs(**environ: str) -> dict[str, str]:
    """HS256 keys (nothing to fetch), so only the DPoP replay record is tried."""
    return {"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET, **environ}


@pytest.fixture
def provider() -> Iterator[JwksServer]:
    with JwksServer(default_jwks(), stall_seconds=5.0) as running:
        yield running


@pytest.fixture
def redis(tmp_path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


# --- the signing keys -------------------------------------------------------------------------------------------


def test_check_passes_and_prints_the_settings_when_every_dependency_answers(provider, redis, tmp_path):
    result = check(remote_keys(JWT_JWKS_URL=provider.jwks_url, DPOP_REPLAY_STORE=redis.url))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert "key_source = url" in lines
    assert f"jwks_url = {provider.jwks_url}" in lines
    assert f"dpop_replay_store = {redis.url}" in lines
    assert provider.count() == 1


def test_a_refused_connection_to_the_jwks_url_exits_3_naming_it():
    url = f"http://127.0.0.1:{free_port()}{JWKS_PATH}"  # nothing listens there
    line = refused(check(remote_keys(JWT_JWKS_URL=url)))
    assert line == f"{ERROR}JWT_JWKS_URL: cannot get signing keys from {url}: connection refused."


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("stall", f"timed out after {FETCH_TIMEOUT} s"),
        ("garbage", "the body is not JSON"),
        ("500", "HTTP 500"),
    ],
)
def test_a_jwks_url_that_does_not_serve_keys_exits_3_naming_it_and_why(provider, behaviour, reason):
    provider.behaviour = behaviour
    line = refused(check(remote_keys(JWT_JWKS_URL=provider.jwks_url)))
    assert line == f"{ERROR}JWT_JWKS_URL: cannot get signing keys from {provider.jwks_url}: {reason}."


def test_a_jwks_without_a_usable_key_exits_3_naming_the_url():
    with JwksServer(jwks()) as empty:
        line = refused(check(remote_keys(JWT_JWKS_URL=empty.jwks_url)))
    assert line == (
        f"{ERROR}JWT_JWKS_URL: cannot get signing keys from {empty.jwks_url}: no usable key (no signing key for RS256)."
    )


def test_a_tls_failure_exits_3_naming_the_url(provider):
    url = f"https://127.0.0.1:{provider.port}{JWKS_PATH}"  # the server speaks plain HTTP
    line = refused(check(remote_keys(JWT_JWKS_URL=url)))
    assert line.startswith(f"{ERROR}JWT_JWKS_URL: cannot get signing keys from {url}: TLS failure (")


def test_an_issuer_without_a_discovery_document_exits_3_naming_jwt_issuer_and_the_document(provider):
    issuer = f"{provider.url}/tenant/"  # the server has no document under this path
    line = refused(check(remote_keys(JWT_ISSUER=issuer)))
    assert line == f"{ERROR}JWT_ISSUER: cannot get signing keys from {issuer[:-1]}{DISCOVERY_PATH}: HTTP 404."


def test_with_several_issuers_each_one_s_keys_are_fetched_and_the_failing_one_named(provider, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}{JWKS_PATH}"
    path = tmp_path / "issuers.toml"
    path.write_text(
        f'[[issuers]]\nissuer = "https://a.example.com/"\njwks_url = "{provider.jwks_url}"\n\n'
        f'[[issuers]]\nissuer = "https://b.example.com/"\njwks_url = "{dead}"\n'
    )
    line = refused(check(remote_keys(JWT_ISSUERS_FILE=str(path))))
    assert line.startswith(
        f"{ERROR}JWT_ISSUERS_FILE: cannot get signing keys for https://b.example.com/ from {dead}: connection refused"
    )
    assert provider.count() == 1  # A's keys were fetched first, and answered
    path.write_text(f'[[issuers]]\nissuer = "https://a.example.com/"\njwks_url = "{provider.jwks_url}"\n')
    passed = check(remote_keys(JWT_ISSUERS_FILE=str(path)))
    assert passed.returncode == 0, passed.stderr
    assert "key_source = issuers-file" in passed.stdout.splitlines()
    assert f"issuer_entries = https://a.example.com/ ({provider.jwks_url})" in passed.stdout.splitlines()


def test_an_auth0_domain_that_does_not_resolve_exits_3_naming_auth0_domain_and_the_url():
    # In a network namespace of its own the lookup fails on this machine: no query can leave it.
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode:
        pytest.skip("needs `unshare -n` (root) to resolve a name without reaching the network")
    result = check(remote_keys(AUTH0_DOMAIN="tenant.invalid"), wrapper=(unshare, "-n"))
    url = "https://tenant.invalid/.well-known/jwks.json"
    assert refused(result).startswith(f"{ERROR}AUTH0_DOMAIN: cannot get signing keys from {url}: name not resolved")


# --- the Redis replay store -------------------------------------------------------------------------------------


def test_a_stopped_redis_exits_3_naming_the_store_and_its_host_without_the_password(redis):
    redis.stop()
    result = check(hs(DPOP_REPLAY_STORE=f"redis://:{RIGHT_PASSWORD}@127.0.0.1:{redis.port}/0"))
    line = refused(result)
    assert (
        line
        == f"{ERROR}DPOP_REPLAY_STORE: cannot record proofs in Redis at 127.0.0.1:{redis.port}: connection refused."
    )
    assert RIGHT_PASSWORD not in result.stderr


def test_a_paused_redis_exits_3_after_the_replay_timeout(redis):
    redis.pause()
    line = refused(check(hs(DPOP_REPLAY_STORE=redis.url, DPOP_REPLAY_TIMEOUT="0.25")))
    assert line == (
        f"{ERROR}DPOP_REPLAY_STORE: cannot record proofs in Redis at 127.0.0.1:{redis.port}: timed out after 0.25 s."
    )


@pytest.mark.parametrize("given_in", ["variable", "url"])
def test_a_redis_that_refuses_the_password_exits_3_and_never_prints_it(tmp_path, given_in):
    with redis_server(tmp_path, password=RIGHT_PASSWORD) as guarded:
        if given_in == "variable":
            environ = hs(DPOP_REPLAY_STORE=guarded.url, DPOP_REPLAY_STORE_PASSWORD=WRONG_PASSWORD)
        else:
            environ = hs(DPOP_REPLAY_STORE=f"redis://:{WRONG_PASSWORD}@127.0.0.1:{guarded.port}/0")
        result = check(environ)
    line = refused(result)
    assert line == (
        f"{ERROR}DPOP_REPLAY_STORE: cannot record proofs in Redis at 127.0.0.1:{guarded.port}: authentication failed."
    )
    assert WRONG_PASSWORD not in result.stderr and RIGHT_PASSWORD not in result.stderr


def test_a_read_only_replica_exits_3_although_it_answers_a_ping(redis):
    admin = redis_py.Redis(port=redis.port, socket_timeout=5)
    admin.config_set("replica-read-only", "yes")
    admin.replicaof("127.0.0.1", free_port())  # a primary that never answers: the replica stays read-only
    assert admin.ping()
    admin.close()
    line = refused(check(hs(DPOP_REPLAY_STORE=redis.url)))
    assert (
        line == f"{ERROR}DPOP_REPLAY_STORE: cannot record proofs in Redis at 127.0.0.1:{redis.port}: read-only replica."
    )


# --- the replay directory ---------------------------------------------------------------------------------------


def test_a_writable_replay_dir_passes_and_is_left_as_it_was(tmp_path):
    result = check(hs(DPOP_REPLAY_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert f"dpop_replay_dir = {tmp_path}" in result.stdout.splitlines()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("where", "reason"),
    [("missing", "no such directory"), ("file/dir", "no such directory"), ("file", "not a directory")],
)
def test_a_replay_dir_that_is_not_a_directory_exits_3_naming_it(tmp_path, where, reason):
    (tmp_path / "file").write_text("a regular file")
    path = tmp_path / where
    line = refused(check(hs(DPOP_REPLAY_DIR=str(path))))
    assert line == f"{ERROR}DPOP_REPLAY_DIR: cannot record proofs in {path}: {reason}."


def test_a_replay_dir_that_is_not_writable_exits_3_naming_it(tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    wrapper: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes through mode bits: take away the capability that lets it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and no setpriv to drop CAP_DAC_OVERRIDE with")
        wrapper = (setpriv, "--bounding-set=-dac_override,-dac_read_search")
    line = refused(check(hs(DPOP_REPLAY_DIR=str(read_only)), wrapper=wrapper))
    assert line == f"{ERROR}DPOP_REPLAY_DIR: cannot record proofs in {read_only}: not writable (permission denied)."


def test_the_replay_dir_is_not_tried_when_redis_records_the_proofs(redis, tmp_path):
    result = check(hs(DPOP_REPLAY_STORE=redis.url, DPOP_REPLAY_DIR=str(tmp_path / "missing")))
    assert result.returncode == 0, result.stderr


def test_a_usage_error_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "service", "inspect"], env={}, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_configuration_error_exits_1_with_one_line_naming_the_variable():
    result = check({"JWT_SECRET": SECRET})
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("service: configuration error: JWT_AUDIENCE is missing")


def test_a_bad_dpop_variable_exits_1_naming_it():
    result = check({"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET, "DPOP": "maybe"})
    assert result.returncode == 1
    assert result.stderr.strip() == "service: configuration error: DPOP must be one of allowed, required, off."
