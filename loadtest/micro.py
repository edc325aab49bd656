"""In-process cost of one verification: PyJWT's `jwt.decode` against the service's own path.

    .venv/bin/python -m loadtest.micro [ROUNDS]

Both paths check the same things (signature, exp, aud, iss); the service's path is `TokenVerifier.verify`
(strict parse, then PyJWT's algorithm object) without the token cache, and with it for a repeated token.
Prints microseconds per call, best of 5 runs. A benchmark, not a test.
"""

from __future__ import annotations

import sys
import time
import timeit
from functools import partial

import jwt
from cryptography.hazmat.primitives import serialization

from loadtest.scenarios import RSA_KID, rsa_signing_key
from service.keys.keyset import KeySet, SharedSecret
from service.tokens.verifier import TokenVerifier

AUDIENCE, ISSUER, SECRET = "https://api.example.com", "https://issuer.example.com/", b"s" * 32


def cases() -> list[tuple[str, str, object, object]]:
    """(name, token, key for jwt.decode, key source for the service)."""
    private, jwk = rsa_signing_key()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"aud": AUDIENCE, "iss": ISSUER, "sub": "user", "iat": int(time.time()), "exp": int(time.time()) + 3600}
    return [
        ("HS256", jwt.encode(claims, SECRET, "HS256"), SECRET, SharedSecret(SECRET, ("HS256",))),
        (
            "RS256",
            jwt.encode(claims, private, "RS256", headers={"kid": RSA_KID}),
            public_pem,
            KeySet.from_jwks({"keys": [jwk]}, ("RS256",)),
        ),
    ]


def best_microseconds(call, rounds: int) -> float:
    return min(timeit.repeat(call, number=rounds, repeat=5)) / rounds * 1e6


def main(rounds: int = 2000) -> None:
    print(f"{'algorithm':<10}{'jwt.decode':>14}{'service':>14}{'ratio':>8}")
    for name, token, pyjwt_key, keys in cases():
        verifier = TokenVerifier(keys, algorithms=(name,), audiences=(AUDIENCE,), issuer=ISSUER, leeway=5)
        verifier.verify(token)  # both paths must accept the token before they are timed
        jwt.decode(token, pyjwt_key, algorithms=[name], audience=AUDIENCE, issuer=ISSUER)
        pyjwt = best_microseconds(
            partial(jwt.decode, token, pyjwt_key, [name], audience=AUDIENCE, issuer=ISSUER), rounds
        )
        ours = best_microseconds(partial(verifier.verify, token), rounds)
        print(f"{name:<10}{pyjwt:>12.1f}us{ours:>12.1f}us{ours / pyjwt:>8.2f}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
