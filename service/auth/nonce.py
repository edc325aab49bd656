"""DPoP server nonces (RFC 9449 sections 8 and 9) with no shared state: a nonce is a MAC of a time step.

With DPOP_NONCE_SECRET set (the same on every replica), a proof must carry a `nonce` this service issued: the
step's number and an HMAC-SHA256 of it under the secret, accepted during its own step and the next one, so a
nonce lives between one and two `ttl`s. A nonce minted by one replica is valid on every other, and no replica
remembers any. Written here because no library makes stateless nonces; the MAC is the standard library's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from collections.abc import Callable

_STEP = struct.Struct(">Q")
_MAC_BYTES = 16  # 128 bits of HMAC-SHA256: far beyond guessing within a step
_LENGTH = 32  # characters of base64url for 8 + 16 bytes


class Nonces:
    """Issues and checks nonces for steps of `ttl` seconds under `secret` (at least 32 bytes)."""

    def __init__(self, secret: bytes, ttl: float, clock: Callable[[], float] = time.time):
        self._secret = secret
        self._ttl = ttl
        self._clock = clock
        self._cached: tuple[int, str] = (-1, "")

    def step(self) -> int:
        """The current step's number."""
        return int(self._clock() // self._ttl)

    def current(self) -> str:
        """The nonce of the current step, computed once per step."""
        step = self.step()
        cached = self._cached
        if cached[0] != step:
            cached = self._cached = (step, self._mint(step))
        return cached[1]

    def step_of(self, nonce: object) -> int | None:
        """The step `nonce` was issued for when it is genuine and still accepted (this step or the last), else None."""
        if type(nonce) is not str or len(nonce) != _LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _STEP.size + _MAC_BYTES:  # the decoder skips characters outside the alphabet
            return None
        (step,) = _STEP.unpack(raw[: _STEP.size])
        if self.step() - step not in (0, 1):
            return None
        if not hmac.compare_digest(raw[_STEP.size :], self._mac(step)):
            return None
        return step

    def _mint(self, step: int) -> str:
        return base64.urlsafe_b64encode(_STEP.pack(step) + self._mac(step)).decode("ascii")

    def _mac(self, step: int) -> bytes:
        return hmac.new(self._secret, b"dpop-nonce" + _STEP.pack(step), hashlib.sha256).digest()[:_MAC_BYTES]
