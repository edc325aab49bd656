"""Hostile tokens and odd Authorization headers, end to end through real gunicorn (two workers).

A sample of tests/auth/test_middleware_attacks.py (built with the same tests/support/hostile.py, but valid by the
wall clock except for the property under test, since the server reads the real clock) goes through gunicorn's HTTP
parser into the service. Header oddities that HTTP clients refuse to send go over raw sockets: gunicorn either
answers them itself (a 4xx, never a 5xx) or hands the service a value it refuses. No response and no log line
carries a token.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from service import resources
from tests.support.factories import AUDIENCE, ISSUER, OTHER_RSA_KEY, RSA_KEY, SECRET, claims, pem, wall_clock_token
from tests.support.gunicorn_server import (
    INVALID_TOKEN,
    REALM,
    Response,
    Server,
    assert_error,
    environment,
    gunicorn,
    jwks_file_environment,
    wait_for_log,
)
from tests.support.hostile import (
    ATTACKER_EC_KEY,
    ATTACKER_KEYS,
    ATTACKER_SECRET,
    DROP,
    P256_ORDER,
    attacker_jwk,
    header,
    json_with,
    payload,
    signed,
    token,
    with_trailing_bits,
)
from tests.support.jose import b64url_decode, segment
from tests.support.token_refusals import (
    ALGORITHM_REFUSED,
    BAD_SIGNATURE,
    EXPIRED,
    HEADER_REFUSED,
    KEY_UNKNOWN,
    MALFORMED,
    NO_EXPIRY,
    NOT_BEARER,
    NOT_ONE_TOKEN,
    NOT_YET_VALID,
    TOO_LARGE,
    WRONG_AUDIENCE,
    WRONG_ISSUER,
    bad_claim,
)

CHALLENGES = {
    "authorization_header_missing": REALM,
    "invalid_header": f'{REALM}, error="invalid_request"',
}
FIELD_LIMIT = 16384  # bytes: gunicorn.conf.py's limit_request_field_size, counted with the line's CRLF
RAW_TIMEOUT = 5.0  # seconds for a raw exchange

# Every token this module sends; the last test looks for each in gunicorn's logs (pytest keeps file order).
SENT: set[str] = set()


# --- servers -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hs_server(tmp_path_factory) -> Iterator[Server]:
    """HS256 with JWT_SECRET; access log on."""
    environ = environment(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, ACCESS_LOG="1")
    with gunicorn(environ, tmp_path_factory.mktemp("hs-attacks")) as server:
        yield server


@pytest.fixture(scope="module")
def jwks_server(tmp_path_factory) -> Iterator[Server]:
    """RS256 and ES256 with the public keys of factories.default_jwks() in JWT_JWKS_FILE; access log on."""
    directory = tmp_path_factory.mktemp("jwks-attacks")
    environ = jwks_file_environment(directory, ACCESS_LOG="1")
    with gunicorn(environ, directory) as server:
        yield server


@pytest.fixture(scope="module")
def servers(hs_server, jwks_server) -> dict[str, Server]:
    """The server that verifies each algorithm."""
    return {"HS256": hs_server, "RS256": jwks_server, "ES256": jwks_server}


# --- tokens valid by the wall clock --------------------------------------------------------------------------


def claims_now(issued_ago: float = 0.0, **members) -> dict:
    """Claims valid by the wall clock (issued `issued_ago` seconds ago, for 600 s), with `members` set."""
    return payload(**{**claims(time.time() - issued_ago), **members})


def token_now(algorithm: str, head: dict | None = None, key=None, **members) -> str:
    """test_attacks.token over claims_now(**members): signed with the mode's genuine key unless `key` is given."""
    return token(algorithm, head=head, body=claims_now(**members), key=key)


def with_signature_now(algorithm: str, mutate) -> str:
    """A token valid now with its signature bytes replaced by `mutate(signature)`."""
    header_segment, payload_segment, signature = token_now(algorithm).split(".")
    return f"{header_segment}.{payload_segment}.{segment(mutate(b64url_decode(signature)))}"


def oversized(algorithm: str, at_least: int = 8193) -> str:
    """A genuinely signed token valid now, the shortest a `pad` claim makes at least `at_least` characters."""
    pad = (at_least - len(token_now(algorithm, pad=""))) * 3 // 4
    while len(hostile := token_now(algorithm, pad="p" * pad)) < at_least:
        pad += 1
    assert len(hostile) <= at_least + 2  # one more pad byte adds at most two characters
    return hostile


def signature_with_trailing_bits(algorithm: str) -> str:
    """A token valid now whose signature is encoded non-canonically: an unused trailing bit set."""
    header_segment, payload_segment, signature = token_now(algorithm).split(".")
    return f"{header_segment}.{payload_segment}.{with_trailing_bits(signature)}"


def payload_one_char_too_long(algorithm: str) -> str:
    """A token valid now whose payload segment is lengthened to 4n+1 characters (which no byte string encodes
    to), then signed as it stands."""
    header_segment, payload_segment, _ = token_now(algorithm).split(".")
    return signed(algorithm, header_segment, payload_segment + "A" * ((1 - len(payload_segment)) % 4))


def hs256_keyed_with_rsa_pem(algorithm: str) -> str:
    """Algorithm confusion: HS256 whose secret is rsa-1's public key PEM, with rsa-1's kid."""
    return signed("HS256", segment({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}), segment(claims_now()), pem(RSA_KEY))


def nested(depth: int, opening: str, closing: str) -> str:
    return opening * depth + "1" + closing * depth


def send(server: Server, hostile: str) -> Response:
    SENT.add(hostile)
    return server.get(token=hostile)


def assert_not_echoed(response: Response, *tokens: str) -> None:
    """Neither the token nor its signature segment appears in the body or a header value."""
    visible = response.body.decode("latin-1") + "\n" + "\n".join(response.headers.values())
    for sent in tokens:
        for fragment in {sent, sent.rsplit(".", 1)[-1]}:
            if len(fragment) >= 16:
                assert fragment not in visible


def assert_refused(response: Response, expected: tuple[str, str], hostile: str, server: Server) -> None:
    """A 401 from the service: the fixed code and description, the challenge with its metadata URL, no echo."""
    code, description = expected
    assert_error(response, 401, code, CHALLENGES.get(code, INVALID_TOKEN), server)
    assert response.json() == {"code": code, "description": description}
    assert_not_echoed(response, hostile)


def assert_accepted(response: Response) -> None:
    assert response.status == 200, response.body
    assert response.text == resources.SECURED_PING


# --- hostile tokens ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
def test_control_token_built_like_the_hostile_ones_gets_200(servers, algorithm):
    assert_accepted(send(servers[algorithm], token_now(algorithm)))


HEADER_CASES = [
    pytest.param("HS256", lambda a: token_now(a, header(a, alg="none")), ALGORITHM_REFUSED, id="alg-none-signed"),
    pytest.param(
        "RS256",
        lambda a: f"{segment(header(a, alg='none'))}.{segment(claims_now())}.",
        MALFORMED,
        id="alg-none-unsigned",
    ),
    pytest.param("ES256", lambda a: token_now(a, header(a, alg="nOnE")), ALGORITHM_REFUSED, id="alg-nOnE"),
    pytest.param("HS256", lambda a: token_now(a, header(a, alg="hs256")), ALGORITHM_REFUSED, id="alg-lower-case"),
    pytest.param("RS256", hs256_keyed_with_rsa_pem, ALGORITHM_REFUSED, id="hs256-keyed-with-rsa-pem-on-jwks"),
    pytest.param("HS256", hs256_keyed_with_rsa_pem, BAD_SIGNATURE, id="hs256-keyed-with-rsa-pem-on-secret"),
    pytest.param(
        "RS256",
        lambda a: token_now("ES256", {"alg": "ES256", "kid": "rsa-1"}, ATTACKER_EC_KEY),
        KEY_UNKNOWN,
        id="es256-on-the-rsa-kid",
    ),
    pytest.param("HS256", lambda a: token_now(a, header(a, crit=["exp"])), HEADER_REFUSED, id="crit"),
    pytest.param("ES256", lambda a: token_now(a, header(a, crit=["b64"], b64=False)), HEADER_REFUSED, id="crit-b64"),
    pytest.param("RS256", lambda a: token_now(a, header(a, kid=None)), MALFORMED, id="null-kid-jwks"),
    pytest.param("HS256", lambda a: token_now(a, header(a, kid=None)), MALFORMED, id="null-kid-secret"),
    pytest.param("ES256", lambda a: token_now(a, header(a, kid="k" * 257)), MALFORMED, id="kid-257-chars"),
    pytest.param(
        "HS256", lambda a: token_now(a, header(a, kid="../../dev/null"), b""), BAD_SIGNATURE, id="kid-dev-null"
    ),
    pytest.param(
        "RS256",
        lambda a: token_now(a, header(a, kid="../../../../etc/passwd"), ATTACKER_KEYS[a]),
        KEY_UNKNOWN,
        id="kid-path-traversal",
    ),
    pytest.param(
        "RS256",
        lambda a: token_now(a, header(a, jwk=attacker_jwk(a, "rsa-1")), ATTACKER_KEYS[a]),
        BAD_SIGNATURE,
        id="embedded-jwk",
    ),
    pytest.param(
        "HS256",
        lambda a: token_now(a, header(a, jku="https://evil.example/jwks.json"), ATTACKER_SECRET),
        BAD_SIGNATURE,
        id="jku",
    ),
]


@pytest.mark.parametrize(("algorithm", "build", "expected"), HEADER_CASES)
def test_hostile_jose_header_gets_401_through_gunicorn(servers, algorithm, build, expected):
    server = servers[algorithm]
    hostile = build(algorithm)
    assert_refused(send(server, hostile), expected, hostile, server)


ENCODING_CASES = [
    pytest.param("HS256", signature_with_trailing_bits, MALFORMED, id="signature-trailing-bits"),
    pytest.param("RS256", payload_one_char_too_long, MALFORMED, id="payload-length-1-mod-4"),
    pytest.param("ES256", lambda a: token_now(a) + "==", MALFORMED, id="signature-padding"),
    pytest.param(
        "HS256",
        lambda a: token(a, head=b'{"alg": "none", ' + json.dumps(header(a)).encode()[1:], body=claims_now()),
        MALFORMED,
        id="duplicate-alg-none-first",
    ),
    pytest.param(
        "RS256",
        lambda a: token(a, body=json_with(claims_now(), f'"exp": {int(time.time()) + 86400}')),
        MALFORMED,
        id="duplicate-exp",
    ),
    pytest.param(
        "ES256",
        lambda a: token(a, head=b"\xef\xbb\xbf" + json.dumps(header(a)).encode(), body=claims_now()),
        MALFORMED,
        id="header-utf8-bom",
    ),
    pytest.param(
        "HS256",
        lambda a: token(a, body=json_with(claims_now(), '"deep": ' + nested(2500, "[", "]"))),
        MALFORMED,
        id="nested-arrays-2500",
    ),
    pytest.param(
        "RS256",
        lambda a: token(a, body=json_with(claims_now(), '"deep": ' + nested(1100, '{"":', "}"))),
        MALFORMED,
        id="nested-objects-1100",
    ),
    pytest.param("HS256", oversized, TOO_LARGE, id="oversize-hs256"),
    pytest.param("ES256", oversized, TOO_LARGE, id="oversize-es256"),
    pytest.param("RS256", lambda a: token_now(a).rsplit(".", 1)[0], MALFORMED, id="two-segments"),
    pytest.param(
        "HS256",
        lambda a: ".".join([segment({"alg": "RSA-OAEP", "enc": "A256GCM"}), *["e30"] * 4]),
        MALFORMED,
        id="jwe-five-segments",
    ),
    pytest.param("ES256", lambda a: token_now(a) + "..", MALFORMED, id="trailing-dots"),
]


@pytest.mark.parametrize(("algorithm", "build", "expected"), ENCODING_CASES)
def test_non_canonical_or_oversized_encoding_gets_401_through_gunicorn(servers, algorithm, build, expected):
    server = servers[algorithm]
    hostile = build(algorithm)
    assert_refused(send(server, hostile), expected, hostile, server)


CLAIM_CASES = [
    pytest.param("HS256", lambda a: token(a, body=claims_now(issued_ago=3600)), EXPIRED, id="expired-hs256"),
    pytest.param("ES256", lambda a: token(a, body=claims_now(issued_ago=3600)), EXPIRED, id="expired-es256"),
    pytest.param("RS256", lambda a: token_now(a, nbf=int(time.time()) + 600), NOT_YET_VALID, id="nbf-in-10-minutes"),
    pytest.param("HS256", lambda a: token_now(a, exp="9999999999"), bad_claim("exp"), id="exp-string"),
    pytest.param("RS256", lambda a: token_now(a, exp=10**400), bad_claim("exp"), id="exp-int-10e400"),
    pytest.param(
        "ES256",
        lambda a: token(a, body=json_with(claims_now(exp=DROP), '"exp": 1e400')),
        bad_claim("exp"),
        id="exp-1e400",
    ),
    pytest.param(
        "HS256", lambda a: token(a, body=json_with(claims_now(exp=DROP), '"exp": NaN')), MALFORMED, id="exp-NaN"
    ),
    pytest.param("RS256", lambda a: token_now(a, exp=DROP), NO_EXPIRY, id="exp-missing"),
    pytest.param("HS256", lambda a: token_now(a, aud=AUDIENCE + "/"), WRONG_AUDIENCE, id="aud-trailing-slash-hs256"),
    pytest.param("ES256", lambda a: token_now(a, aud=AUDIENCE + "/"), WRONG_AUDIENCE, id="aud-trailing-slash-es256"),
    pytest.param(
        "RS256",
        lambda a: token_now(a, aud=["https://API.example.com", AUDIENCE + "/"]),
        WRONG_AUDIENCE,
        id="aud-list-of-near-misses",
    ),
    pytest.param("HS256", lambda a: token_now(a, iss=ISSUER.rstrip("/")), WRONG_ISSUER, id="iss-no-trailing-slash"),
]


@pytest.mark.parametrize(("algorithm", "build", "expected"), CLAIM_CASES)
def test_claims_wrong_by_the_wall_clock_or_exact_match_get_401_through_gunicorn(servers, algorithm, build, expected):
    server = servers[algorithm]
    hostile = build(algorithm)
    assert_refused(send(server, hostile), expected, hostile, server)


SIGNATURE_CASES = [
    pytest.param("ES256", lambda a: with_signature_now(a, lambda sig: bytes(64)), id="psychic-ecdsa-r-s-zero"),
    pytest.param(
        "ES256",
        lambda a: with_signature_now(a, lambda sig: P256_ORDER.to_bytes(32, "big") * 2),
        id="ecdsa-r-s-equal-n",
    ),
    pytest.param(
        "ES256",
        lambda a: with_signature_now(
            a, lambda sig: encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        ),
        id="ecdsa-der-encoded",
    ),
    pytest.param("RS256", lambda a: with_signature_now(a, lambda sig: bytes(256)), id="rsa-s-zero"),
    pytest.param("RS256", lambda a: token_now(a, key=OTHER_RSA_KEY), id="rsa-other-key"),
    pytest.param("HS256", lambda a: token_now(a, key=ATTACKER_SECRET), id="hs256-other-secret"),
    pytest.param(
        "HS256", lambda a: with_signature_now(a, lambda sig: sig[:-1] + bytes([sig[-1] ^ 1])), id="last-bit-flipped"
    ),
]


@pytest.mark.parametrize(("algorithm", "build"), SIGNATURE_CASES)
def test_forged_signature_gets_401_invalid_signature_through_gunicorn(servers, algorithm, build):
    server = servers[algorithm]
    hostile = build(algorithm)
    assert_refused(send(server, hostile), BAD_SIGNATURE, hostile, server)


# --- raw requests: header oddities HTTP clients will not send --------------------------------------------------


@dataclass(frozen=True)
class RawResponse(Response):
    """A response read off a raw socket; `version` is its status line's HTTP version."""

    version: str = ""


def exchange(server: Server, *header_lines: bytes, request_line: bytes = b"GET /secured/ping HTTP/1.1") -> RawResponse:
    """Send the request line and header lines as given (an HTTP/1.1 request also gets Host and Connection: close),
    on a fresh connection, and read the response until gunicorn closes the connection."""
    if request_line.endswith(b"HTTP/1.1"):
        header_lines = (f"Host: 127.0.0.1:{server.port}".encode(), b"Connection: close", *header_lines)
    request = b"\r\n".join((request_line, *header_lines)) + b"\r\n\r\n"
    chunks = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=RAW_TIMEOUT) as connection:
        connection.sendall(request)
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    head, blank_line, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert blank_line, f"no complete response head: {head[:200]!r}"
    status_line, _, fields = head.partition(b"\r\n")
    version, status, _ = status_line.decode("latin-1").split(" ", 2)
    headers = http.client.parse_headers(io.BytesIO(fields + b"\r\n\r\n"))
    assert int(headers["Content-Length"]) == len(body)
    return RawResponse(int(status), headers, body, version)


def valid_token() -> str:
    """An HS256 token valid now, recorded as sent."""
    sent = wall_clock_token()
    SENT.add(sent)
    return sent


def bearer_line(value: bytes, name: bytes = b"Authorization") -> bytes:
    return name + b": " + value


def assert_answered_by_gunicorn(response: RawResponse, status: int, code: str, *tokens: str) -> None:
    """A refusal gunicorn wrote as the service's JSON error (service/ops/refusals.py): the request never reached
    the service (no challenge), and nothing sent comes back."""
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == code
    assert response.headers["WWW-Authenticate"] is None
    assert_not_echoed(response, *tokens)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param("Bearer {t}", "garbage", NOT_ONE_TOKEN, id="valid-then-garbage"),
        pytest.param("garbage", "Bearer {t}", NOT_BEARER, id="garbage-then-valid"),
        pytest.param("Bearer {t}", "Bearer {t}", NOT_ONE_TOKEN, id="valid-twice"),
    ],
)
def test_two_authorization_lines_are_joined_with_a_comma_and_get_401_invalid_header(hs_server, first, second, expected):
    genuine = valid_token()
    response = exchange(
        hs_server,
        bearer_line(first.format(t=genuine).encode()),
        bearer_line(second.format(t=genuine).encode()),
    )
    assert_refused(response, expected, genuine, hs_server)


def test_tab_between_bearer_and_token_gets_401_invalid_header(hs_server):
    genuine = valid_token()
    response = exchange(hs_server, bearer_line(b"Bearer\t" + genuine.encode()))
    assert_refused(response, NOT_ONE_TOKEN, genuine, hs_server)


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(lambda t: [b"Authorization: Bearer", b" " + t], id="token-on-continuation-line"),
        pytest.param(lambda t: [b"Authorization: Bearer " + t, b"\tgarbage"], id="garbage-on-continuation-line"),
    ],
)
def test_obs_fold_continuation_is_refused_by_gunicorn_with_400(hs_server, lines):
    genuine = valid_token()
    response = exchange(hs_server, *lines(genuine.encode()))
    assert_answered_by_gunicorn(response, 400, "malformed_header", genuine)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda t: b"Bearer " + t + b"\x00", id="nul-after-token"),
        pytest.param(lambda t: b"Bearer \x00" + t, id="nul-before-token"),
        pytest.param(lambda t: b"Bearer\x01" + t, id="soh-as-separator"),
        pytest.param(lambda t: b"Bearer " + t + b"\x7f", id="del"),
        pytest.param(lambda t: b"Bearer " + t + b"\x0b", id="vertical-tab"),
        pytest.param(lambda t: b"Bearer " + t + b"\rX-Injected: 1", id="bare-cr"),
        pytest.param(lambda t: b"Bearer " + t + b"\nX-Injected: 1", id="bare-lf"),
    ],
)
def test_control_character_in_authorization_is_refused_by_gunicorn_with_400(hs_server, value):
    genuine = valid_token()
    response = exchange(hs_server, bearer_line(value(genuine.encode())))
    assert_answered_by_gunicorn(response, 400, "malformed_header", genuine)


def test_non_ascii_byte_after_the_token_reaches_the_service_and_gets_401_invalid_header(hs_server):
    genuine = valid_token()
    response = exchange(hs_server, bearer_line(b"Bearer " + genuine.encode() + b"\xff"))
    assert_refused(response, NOT_ONE_TOKEN, genuine, hs_server)


@pytest.mark.parametrize("name", [b"authorization", b"AUTHORIZATION", b"aUtHoRiZaTiOn"])
def test_authorization_header_name_in_any_case_gets_200(hs_server, name):
    response = exchange(hs_server, bearer_line(b"Bearer " + valid_token().encode(), name))
    assert response.version == "HTTP/1.1"
    assert_accepted(response)


@pytest.mark.parametrize("name", [b"Authorization ", b"Authorization\t"], ids=["space", "tab"])
def test_whitespace_before_the_colon_is_refused_by_gunicorn_with_400(hs_server, name):
    genuine = valid_token()
    response = exchange(hs_server, bearer_line(b"Bearer " + genuine.encode(), name))
    assert_answered_by_gunicorn(response, 400, "malformed_header", genuine)


def authorization_line_of(length: int) -> tuple[bytes, str]:
    """An Authorization line `length` bytes long with its CRLF, carrying a genuinely signed over-8-KiB token."""
    hostile = oversized("HS256", at_least=length - 200)
    SENT.add(hostile)
    filler = length - len(b"Authorization: Bearer ") - len(hostile) - len(b"\r\n")
    return b"Authorization: Bearer " + b" " * filler + hostile.encode(), hostile


def test_header_line_at_the_16_kib_limit_reaches_the_service(hs_server):
    line, hostile = authorization_line_of(FIELD_LIMIT)
    assert len(line) + 2 == FIELD_LIMIT
    assert_refused(exchange(hs_server, line), TOO_LARGE, hostile, hs_server)


def test_header_line_over_16_kib_is_refused_by_gunicorn_with_431(hs_server):
    line, hostile = authorization_line_of(FIELD_LIMIT + 1)
    assert len(line) + 2 == FIELD_LIMIT + 1
    response = exchange(hs_server, line)
    assert_answered_by_gunicorn(response, 431, "header_too_large", hostile)


def test_http_1_0_request_with_valid_token_gets_200(hs_server):
    response = exchange(
        hs_server, bearer_line(b"Bearer " + valid_token().encode()), request_line=b"GET /secured/ping HTTP/1.0"
    )
    assert response.version == "HTTP/1.0"
    assert_accepted(response)


def test_token_in_the_query_string_is_ignored_and_gets_401_header_missing(hs_server):
    genuine = valid_token()
    response = exchange(hs_server, request_line=f"GET /secured/ping?access_token={genuine} HTTP/1.1".encode())
    assert_error(response, 401, "authorization_header_missing", REALM, hs_server)
    assert_not_echoed(response, genuine)


def test_empty_authorization_value_gets_401_header_missing(hs_server):
    response = exchange(hs_server, b"Authorization: ")
    assert_error(response, 401, "authorization_header_missing", REALM, hs_server)


# --- logs ----------------------------------------------------------------------------------------------------


def test_logs_never_contain_a_token_sent_in_this_module(hs_server, jwks_server):
    # Runs last: SENT then holds every token the module sent. These requests make sure it is never empty.
    expired = token("RS256", body=claims_now(issued_ago=3600))
    assert send(jwks_server, expired).status == 401
    genuine = valid_token()
    assert exchange(hs_server, request_line=f"GET /secured/ping?access_token={genuine} HTTP/1.1".encode()).status == 401
    # gunicorn writes a request's access log line after its response: wait for a marker request's line on each.
    for server in (hs_server, jwks_server):
        agent = f"log-check-{uuid.uuid4()}"
        assert server.get("/ping", headers={"User-Agent": agent}).status == 200
        wait_for_log(server.stdout, agent)
    logs = "".join(path.read_text() for server in (hs_server, jwks_server) for path in (server.stdout, server.stderr))
    assert '"GET /secured/ping HTTP/1.1" 401 ' in logs
    assert "access_token" not in logs
    leaked = sorted(
        sent
        for sent in SENT
        for fragment in {sent, sent.rsplit(".", 1)[-1]}
        if len(fragment) >= 16 and fragment in logs
    )
    assert leaked == []
