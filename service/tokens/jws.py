"""Strict parsing of a compact JWS (RFC 7515 section 7.1), done once per token.

Written here rather than left to PyJWT because PyJWT's base64 decoding is lenient (it ignores characters
outside the alphabet and accepts non-canonical trailing bits) and its JSON parsing accepts duplicate names,
NaN and byte-order marks. RFC 8725 asks a verifier to refuse all of those; PyJWT still prepares the
keys and cryptography checks the signatures (see service.keys.keyset.VerificationKey).
"""

from __future__ import annotations

import binascii
import json
from typing import NamedTuple

from service.errors import TOKEN_MALFORMED, TOKEN_TOO_LARGE, InvalidToken
from service.fifo import BoundedFifo

MAX_TOKEN_LENGTH = 8192  # characters; larger tokens are refused before any decoding
# Distinct header segments kept parsed in each process. An issuer signs every token with one of a few headers (one
# per key), and a DPoP client every proof with one (its `jwk` is in it), so the header of almost every token and
# proof was seen before; a flood of distinct headers only evicts the oldest, and is parsed in full as before.
HEADER_CACHE_SIZE = 512

# The base64url alphabet, which bytes.translate deletes in one C pass: what is left of a well-formed token is
# exactly its two dots. Cheaper than a regular expression over the whole token, and as strict: "+", "/", "="
# and anything outside ASCII are refused on the original text, before "-" and "_" are translated onto "+" and "/".
BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# bytes.translate with a 256-byte table: one C pass, several times cheaper than str.translate with a dict.
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
# The last character of a segment of length 4n+2 (4n+3) carries 4 (2) bits that must be zero; these are
# the characters whose low bits are zero (in the standard alphabet, where the check runs after
# translation). Any character may end a segment of length 4n.
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_CANONICAL_LAST = (_ALPHABET, b"", _ALPHABET[::16], _ALPHABET[::4])


class CompactJws(NamedTuple):
    """A parsed token: header and payload objects, the bytes the signature covers, and the signature.

    A NamedTuple rather than a frozen dataclass: equally read-only, and cheaper to build (a frozen
    dataclass's __init__ sets each field through object.__setattr__).
    """

    header: dict
    payload: dict
    signing_input: bytes
    signature: bytes


_make = CompactJws._make


def parse(token: str) -> CompactJws:
    """Split and decode a compact JWS; raises InvalidToken for anything but three strict segments of JSON.

    The header dict of a header segment seen before is the same object as then (`_headers`): callers read it and
    never change it.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(TOKEN_TOO_LARGE)
    if not token.isascii():  # O(1) for a str: then one byte per character, and byte offsets are str offsets
        raise InvalidToken(TOKEN_MALFORMED)
    signed = token.encode("ascii")
    header_end = signed.find(b".")
    payload_end = signed.find(b".", header_end + 1)
    # Exactly two dots and the alphabet, and no segment empty.
    if signed.translate(None, BASE64URL) != b".." or not 0 < header_end < payload_end - 1 < len(signed) - 2:
        raise InvalidToken(TOKEN_MALFORMED)
    standard = signed.translate(_TO_STANDARD)
    segment = token[:header_end]
    header = _headers.get(segment)
    if header is None:
        header = _headers.remember(segment, _json_object(_decode(standard[:header_end])), HEADER_CACHE_SIZE)
    payload = _json_object(_decode(standard[header_end + 1 : payload_end]))
    # _make is tuple.__new__ itself; calling the class runs the NamedTuple's generated Python __new__.
    return _make((header, payload, signed[:payload_end], _decode(standard[payload_end + 1 :])))


# Header segment -> its parsed header, oldest first; only headers that parsed are kept. What a header says is
# still checked on every token (the verifier's and ProofVerifier's header rules): only the decoding is saved.
_headers: BoundedFifo = BoundedFifo()


def _decode(segment: bytes) -> bytes:
    """A segment already checked and translated to the standard alphabet, unpadded; trailing bits must be 0."""
    remainder = len(segment) % 4
    if remainder == 1 or segment[-1] not in _CANONICAL_LAST[remainder]:
        raise InvalidToken(TOKEN_MALFORMED)  # non-canonical: another string decodes to the same bytes
    return binascii.a2b_base64(segment + _PADDING[remainder], strict_mode=True)


def _json_object(raw: bytes) -> dict:
    """A UTF-8 JSON object with unique member names and no NaN or Infinity."""
    try:
        value = _json_value(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, StopIteration):  # JSONDecodeError is a ValueError
        raise InvalidToken(TOKEN_MALFORMED) from None
    if type(value) is not dict:
        raise InvalidToken(TOKEN_MALFORMED)
    return value


def _json_value(text: str) -> object:
    """What `_JSON.decode(text)` returns, without its Python-level wrapper in the usual case.

    `decode` skips leading whitespace, runs the decoder's C scanner (`scan_once`), skips trailing whitespace
    and refuses anything left. Text that starts with "{" has no leading whitespace, so when one scan ends
    exactly at the end of the text, `decode` would have returned the same value; any other text (leading or
    trailing whitespace, extra data, not an object) goes through `decode` itself. The scanner raises what
    `decode` raises, except a bare StopIteration for a missing value, which `_json_object` also catches.

    `scan_once` is an attribute `JSONDecoder.__init__` sets, not documented API. It is called directly because
    skipping `decode`'s wrapper is a measurable share of every full verification (`python -m loadtest.micro
    hot`; docs/performance.md, "Why the hot path looks like this"), and tests/tokens/test_jws.py fails if the
    scanner stops behaving as relied on here.
    """
    if text[:1] == "{":
        value, end = _SCAN_ONCE(text, 0)
        if end == len(text):
            return value
    return _JSON.decode(text)


def _unique_members(pairs: list[tuple[str, object]]) -> dict:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_refuse_constant)
_SCAN_ONCE = _JSON.scan_once  # the C scanner `decode` runs (json.scanner.c_make_scanner)
