"""Strict parsing of a compact JWS (RFC 7515 section 7.1), done once per token.

Written here rather than left to PyJWT because PyJWT's base64 decoding is lenient (it ignores characters
outside the alphabet and accepts non-canonical trailing bits) and its JSON parsing accepts duplicate names,
NaN and byte-order marks. RFC 8725 asks a verifier to refuse all of those; PyJWT still supplies the
signature algorithms (see keys.VerificationKey).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from service.errors import InvalidToken

MAX_TOKEN_LENGTH = 8192  # characters; larger tokens are refused before any decoding
MALFORMED = "token is malformed"

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


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
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise InvalidToken(MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken(MALFORMED) from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise InvalidToken(MALFORMED)  # non-canonical: another string decodes to the same bytes
    return raw


def _json_object(raw: bytes) -> dict:
    """A UTF-8 JSON object with unique member names and no NaN or Infinity."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise InvalidToken(MALFORMED) from None
    if not isinstance(value, dict):
        raise InvalidToken(MALFORMED)
    return value


def _unique_members(pairs: list[tuple[str, object]]) -> dict:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
