"""Strict parsing of a compact JWS (RFC 7515 section 7.1), done once per token.

Written here rather than left to PyJWT because PyJWT's base64 decoding is lenient (it ignores characters
outside the alphabet and accepts non-canonical trailing bits) and its JSON parsing accepts duplicate names,
NaN and byte-order marks. RFC 8725 asks a verifier to refuse all of those; PyJWT still supplies the
signature algorithms (see keys.VerificationKey).
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass

from service.errors import InvalidToken

MAX_TOKEN_LENGTH = 8192  # characters; larger tokens are refused before any decoding
MALFORMED = "token is malformed"

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_TO_STANDARD = str.maketrans("-_", "+/")
_PADDING = ("", "", "==", "=")
# The last character of a segment of length 4n+2 (4n+3) carries 4 (2) bits that must be zero; these are
# the characters whose low bits are zero. Any character may end a segment of length 4n.
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = (_ALPHABET, "", _ALPHABET[::16], _ALPHABET[::4])


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A parsed token: header and payload objects, the bytes the signature covers, and the signature."""

    header: dict
    payload: dict
    signing_input: bytes
    signature: bytes


def parse(token: str) -> CompactJws:
    """Split and decode a compact JWS; raises InvalidToken for anything but three strict segments of JSON."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(MALFORMED)
    header_segment, payload_segment, signature_segment = parts
    return CompactJws(
        header=_json_object(_decode(header_segment)),
        payload=_json_object(_decode(payload_segment)),
        signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
        signature=_decode(signature_segment),
    )


def _decode(segment: str) -> bytes:
    """Strict base64url without padding: alphabet only, and the unused trailing bits are zero."""
    remainder = len(segment) % 4
    if not _SEGMENT.fullmatch(segment) or remainder == 1 or segment[-1] not in _CANONICAL_LAST[remainder]:
        raise InvalidToken(MALFORMED)  # non-canonical: another string decodes to the same bytes
    return binascii.a2b_base64(segment.translate(_TO_STANDARD) + _PADDING[remainder])


def _json_object(raw: bytes) -> dict:
    """A UTF-8 JSON object with unique member names and no NaN or Infinity."""
    try:
        value = _JSON.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise InvalidToken(MALFORMED) from None
    if type(value) is not dict:
        raise InvalidToken(MALFORMED)
    return value


def _unique_members(pairs: list[tuple[str, object]]) -> dict:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_refuse_constant)
