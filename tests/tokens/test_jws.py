"""jws.parse on its own: the one-pass split, the byte-level base64 decoding, the JSON fast path and the header cache.

tests/auth/test_middleware_attacks.py pins the hostile inputs end to end; these cases pin the parts of the parser
that are written for speed, against the slow, obvious reference they replace.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from service import errors
from service.errors import InvalidToken
from service.tokens import jws
from tests.support.jose import b64url

CANONICAL_ORDER = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # index = 6-bit value
SIGNATURE = b64url(bytes(range(32)))


def compact(header: bytes, payload: bytes, signature: str = SIGNATURE) -> str:
    """A compact JWS of these raw segments, with a signature nothing checks here."""
    return f"{b64url(header)}.{b64url(payload)}.{signature}"


def reference_json(raw: bytes) -> object:
    """The slow, obvious rule: strict UTF-8, then the strict decoder's own `decode`."""
    return jws._JSON.decode(raw.decode("utf-8"))


def refused(text: str) -> bool:
    with pytest.raises(InvalidToken) as raised:
        jws.parse(text)
    return raised.value.description == errors.TOKEN_MALFORMED


def test_the_signing_input_is_the_original_text_and_segments_decode_in_the_url_safe_alphabet():
    header, payload = b'{"alg":"HS256"}', '{"sub":"?\u00ff>\u00fb"}'.encode()
    signature = bytes([0xFB, 0xFF, 0xBF, 0x3E])  # encodes with "-" and "_"
    text = compact(header, payload, b64url(signature))
    assert "-" in b64url(payload) and "_" in b64url(payload)
    parsed = jws.parse(text)
    assert parsed.signing_input == text.rsplit(".", 1)[0].encode()
    assert parsed.signature == signature
    assert parsed.payload == {"sub": "?\u00ff>\u00fb"}


@pytest.mark.parametrize("length", range(1, 12))
def test_every_segment_length_decodes_and_only_the_canonical_last_character_is_accepted(length):
    raw = bytes(range(200, 200 + length))
    good = b64url(raw)
    assert jws.parse(compact(b"{}", b"{}", good)).signature == raw
    for character in CANONICAL_ORDER:
        text = compact(b"{}", b"{}", good[:-1] + character)
        if character == good[-1]:
            continue
        # Another last character spells other bytes when its unused low bits are zero (always, for a length
        # of 4n), and otherwise the same bytes non-canonically: only the latter must be refused.
        unused_bits = {0: 0, 2: 4, 3: 2}[len(good) % 4]
        if CANONICAL_ORDER.index(character) % (1 << unused_bits) == 0:
            assert jws.parse(text).signature != raw
        else:
            assert refused(text)


@pytest.mark.parametrize(
    "text",
    ["A.B.C", "AA.BB.CCCCC", "A...", "..", "AA..AA", ".AA.AA", "AA.AA.", "AA.AA.AA.AA", "AA.AA", "AAAA", "", "."],
)
def test_empty_segments_lengths_of_4n_plus_1_and_extra_dots_are_malformed(text):
    assert refused(text)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1}',
        b' {"a":1}',
        b'{"a":1} ',
        b'\t\r\n{"a":1}\n',
        b'{"a":1}x',
        b'{"a":1} {}',
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":2}}',
        b'{"a":}',
        b'{"a": [1, }',
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b"{",
        b"{}",
        b"",
        b" ",
        b"[1]",
        b'"{"',
        b"\xef\xbb\xbf{}",
        b'{"a":"\xff"}',
    ],
)
def test_json_fast_path_agrees_with_the_decoder(raw):
    try:
        expected = reference_json(raw)
    except (UnicodeDecodeError, ValueError):
        expected = None
    text = compact(raw, b"{}")
    if type(expected) is dict:
        assert jws.parse(text).header == expected
    else:
        assert refused(text)


def test_deep_nesting_inside_the_fast_path_is_malformed():
    assert refused(compact(b"{}", b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"))


def test_parse_result_is_read_only():
    parsed = jws.parse(compact(b'{"alg":"HS256"}', json.dumps({"sub": "x"}).encode()))
    with pytest.raises(AttributeError):
        parsed.header = {}


# What _json_value relies on in the json module: JSONDecoder's `scan_once` attribute (not documented API) is the
# C scanner, takes (text, index) and returns (value, end), applies the decoder's hooks, and refuses what `decode`
# refuses for text that starts with "{". Each test below fails if the json module changes one of these.
OBJECT_TEXTS = [
    '{"a":1}',
    '{"a":1} ',
    '{"a":1}x',
    '{"a":1} {}',
    '{"a":{"b":[1,2.5,"c",null,true]}}',
    '{"a":1,"a":2}',
    '{"a":{"b":1,"b":2}}',
    '{"a":}',
    '{"a": [1, }',
    '{"a":NaN}',
    '{"a":-Infinity}',
    '{"a":Infinity}',
    "{",
    "{}",
    '{"a":"\\ud800"}',
    '{"a":' + "[" * 2000 + "]" * 2000 + "}",
]


def test_the_strict_decoder_scans_with_the_c_scanner():
    assert json.scanner.c_make_scanner is not None
    assert isinstance(jws._SCAN_ONCE, json.scanner.c_make_scanner)
    assert jws._SCAN_ONCE is jws._JSON.scan_once


def test_scan_once_returns_the_value_and_the_index_after_it():
    assert jws._SCAN_ONCE('{"a":1}', 0) == ({"a": 1}, 7)
    assert jws._SCAN_ONCE('{"a":1}  {"b":2}', 0) == ({"a": 1}, 7)
    assert jws._SCAN_ONCE('x{"b":[2]}', 1) == ({"b": [2]}, 10)


def test_scan_once_applies_the_decoders_hooks():
    with pytest.raises(ValueError, match="duplicate member name"):
        jws._SCAN_ONCE('{"a":1,"a":2}', 0)
    with pytest.raises(ValueError, match="NaN is not JSON"):
        jws._SCAN_ONCE('{"a":NaN}', 0)


def test_scan_once_signals_a_missing_value_with_stop_iteration():
    with pytest.raises(StopIteration):
        jws._SCAN_ONCE("", 0)


@pytest.mark.parametrize("text", OBJECT_TEXTS, ids=range(len(OBJECT_TEXTS)))
def test_scan_once_over_an_object_gives_what_decode_gives_and_never_ends_a_text_decode_refuses(text):
    try:
        expected = jws._JSON.decode(text)
    except (ValueError, RecursionError):
        with contextlib.suppress(ValueError, RecursionError, StopIteration):
            assert jws._SCAN_ONCE(text, 0)[1] < len(text)  # a scan may stop early; decode refuses the rest
        return
    value, end = jws._SCAN_ONCE(text, 0)
    assert value == expected
    assert end == len(text.rstrip())


@pytest.mark.parametrize("character", ["+", "/", "=", " ", "\n", "\x00", "\u00e9", "\u2024", "\U0001f600"])
def test_a_character_outside_the_base64url_alphabet_is_malformed_in_every_segment(character):
    good = compact(b'{"alg":"HS256"}', b"{}")
    header, payload, signature = good.split(".")
    for text in (
        f"{header}{character}.{payload}.{signature}",
        f"{header}.{character}{payload}.{signature}",
        f"{header}.{payload}.{signature[:-1]}{character}",
    ):
        assert refused(text)


@pytest.fixture
def headers(monkeypatch):
    """An empty header cache of four entries, for this test only."""
    monkeypatch.setattr(jws, "HEADER_CACHE_SIZE", 4)
    monkeypatch.setattr(jws, "_headers", type(jws._headers)())
    return jws._headers


def test_a_header_seen_before_is_the_same_object_and_the_payload_is_parsed_anew(headers):
    header = b'{"alg":"HS256","kid":"k"}'
    first = jws.parse(compact(header, b'{"sub":"a"}'))
    second = jws.parse(compact(header, b'{"sub":"b"}'))
    assert second.header is first.header and first.header == {"alg": "HS256", "kid": "k"}
    assert (first.payload, second.payload) == ({"sub": "a"}, {"sub": "b"})
    assert list(headers) == [b64url(header)]


def test_the_header_cache_is_bounded_and_evicts_the_oldest(headers):
    texts = [compact(json.dumps({"alg": "HS256", "kid": str(n)}).encode(), b"{}") for n in range(6)]
    parsed = [jws.parse(text) for text in texts]
    assert len(headers) == 4
    assert list(headers) == [text.split(".")[0] for text in texts[2:]]
    assert jws.parse(texts[5]).header is parsed[5].header
    again = jws.parse(texts[0])  # evicted: parsed in full again, equal but a new object
    assert again.header == parsed[0].header and again.header is not parsed[0].header
    assert len(headers) == 4 and texts[1].split(".")[0] not in headers


def test_a_header_that_does_not_parse_is_not_kept_and_is_refused_every_time(headers):
    text = compact(b'{"alg":"HS256","alg":"none"}', b"{}")
    assert refused(text) and refused(text)
    assert len(headers) == 0


def test_a_kept_header_does_not_excuse_a_malformed_payload_or_signature(headers):
    header = b'{"alg":"HS256"}'
    jws.parse(compact(header, b"{}"))
    assert refused(compact(header, b'{"a":1,"a":2}'))
    assert refused(compact(header, b"{}", SIGNATURE[:-1] + "B"))  # non-canonical last character
