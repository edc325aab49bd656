"""Where a first-seen token's microseconds go: each stage of its verification timed alone, with the service's own
functions, against the whole request in the app.

    .venv/bin/python -m loadtest.stages [TOKENS]

For HS256, RS256 and ES256 tokens never seen before (cache off), and for a DPoP proof never seen before, each stage
runs over TOKENS distinct inputs, best of ROUNDS, in one thread: header parse (`credentials`), JWS parse, issuer
lookup, header rules and key lookup (`resolve`), the signature (`VerificationKey.verify`, and cryptography's own
verify alone beside it), claims, scopes, the metrics a secured request records beyond any request's, the middleware
on any request (a public ping in the app minus the bare Falcon ping: request id, CORS, request metrics, auth
dispatch), routing and the response (the bare Falcon ping itself); then the whole `TokenVerifier` call and a whole
request through the Falcon app in-process (metrics in one-process mode, no gunicorn), and the token cache beside
them (a hit, and what a miss adds to the verification in a full cache). "rest" is the request minus the stages.
Nothing is logged in the app for an accepted token; gunicorn's access line is outside the app. For DPoP:
proof parse, JWK import (what `ProofVerifier` caches per key, done here for a key never seen), thumbprint, `ath`,
the proof's signature, the replay record (memory store, and the host-local table every gunicorn worker shares, at
its default capacity, a fresh key each call). A benchmark, not a test.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

ROUNDS = 5
AUDIENCE, ISSUER, SECRET = "https://api.example.com", "https://issuer.example.com/", "l" * 32


def best_us(function: Callable[[object], object], inputs: Sequence[object]) -> float:
    """Microseconds per call of `function` over `inputs`, best of ROUNDS passes."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for item in inputs:
            function(item)
        best = min(best, (time.perf_counter() - started) / len(inputs) * 1e6)
    return best


def cryptography_verify(algorithm: str, key: object) -> Callable[[bytes, bytes], None]:
    """cryptography's own verify alone for HS256 (`key` the secret), RS256 or ES256 (a public key), called with
    (signing input, signature): what the signature cannot cost less than. The HMAC is keyed afresh on every call,
    as a verifier without a context keyed once would; RSA and ECDSA get padding and hash objects made once."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    sha256 = hashes.SHA256()
    if algorithm == "HS256":

        def mac(signing_input: bytes, signature: bytes) -> None:
            check = hmac.HMAC(key, sha256)
            check.update(signing_input)
            check.verify(signature)

        return mac
    if algorithm == "RS256":
        pkcs1 = padding.PKCS1v15()
        return lambda signing_input, signature: key.verify(signature, signing_input, pkcs1, sha256)
    ecdsa = ec.ECDSA(sha256)

    def p256(signing_input: bytes, signature: bytes) -> None:
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        key.verify(encode_dss_signature(r, s), signing_input, ecdsa)

    return p256


def bearer_stages(algorithm: str, count: int) -> dict[str, float]:
    import falcon.testing
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from loadtest.ceiling import app as ceiling
    from service import devtoken
    from service.app import create_app
    from service.auth.middleware import Requires, credentials
    from service.keys.keyset import KeySet, SharedSecret
    from service.ops.metrics import Metrics
    from service.settings import Settings
    from service.tokens import jws
    from service.tokens.cache import CachingVerifier
    from service.tokens.claims import check_claims
    from service.tokens.verifier import TokenVerifier

    if algorithm == "HS256":
        private, keys = SECRET, SharedSecret(SECRET.encode(), ("HS256",))
        settings = {"JWT_SECRET": SECRET}
    else:
        if algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        keys = KeySet.from_jwks({"keys": [devtoken.public_jwk(private) | {"kid": "k"}]}, (algorithm,))
        settings = {"JWT_JWKS_FILE": "unused.json", "JWT_ALGORITHMS": algorithm}
    now = time.time()
    kid = None if algorithm == "HS256" else "k"
    tokens = [
        devtoken.encode(private, algorithm, issuer=ISSUER, audience=AUDIENCE, subject=f"u{n}", kid=kid, now=now)
        for n in range(count)
    ]
    environ = {"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER, "JWT_CACHE_SIZE": "0", **settings}
    app = create_app(Settings.from_env(environ), keys=keys)
    verifier = TokenVerifier.single(keys, algorithms=(algorithm,), audiences=(AUDIENCE,), issuer=ISSUER, leeway=5)
    parsed = [jws.parse(token) for token in tokens]
    key = keys.resolve(kid, algorithm)
    requires = Requires()

    alone = cryptography_verify(algorithm, SECRET.encode() if algorithm == "HS256" else key.key)

    def primitive(item) -> None:
        alone(item.signing_input, item.signature)

    environs = [
        falcon.testing.create_environ(path="/secured/ping", headers={"Authorization": f"Bearer {token}"})
        for token in tokens
    ]

    def request(env) -> None:
        app(dict(env), lambda status, headers, exc_info=None: None)

    def bare(env) -> None:  # the ceiling app: routing, a responder, the response, and nothing of the service
        ceiling(dict(env), lambda status, headers, exc_info=None: None)

    public = [falcon.testing.create_environ(path="/ping")] * count
    metrics = Metrics()

    def secured_records(_) -> None:  # what a secured request records beyond any request's: outcome, verification
        metrics.auth_outcome("ok", "bearer")
        metrics.token_verification(ISSUER, "ok")

    full = CachingVerifier(verifier, max_size=max(1, count // 2), ttl=300)  # full: every token evicts the oldest
    hot = CachingVerifier(verifier, max_size=1, ttl=300)
    hot.verify(tokens[0])

    stages = {
        "header parse": best_us(lambda t: credentials(f"Bearer {t}"), tokens),
        "JWS parse": best_us(jws.parse, tokens),
        "issuer lookup": best_us(lambda p: verifier.issuers.find(p.payload.get("iss")), parsed),
        "key lookup": best_us(lambda p: keys.resolve(p.header.get("kid"), algorithm), parsed),
        "signature": best_us(lambda p: key.verify(p.signing_input, p.signature), parsed),
        "claims": best_us(
            lambda p: check_claims(p.payload, now=now, leeway=5, audiences={AUDIENCE}, issuer=ISSUER, max_age=None),
            parsed,
        ),
        "scopes": best_us(lambda p: requires.check(p.payload), parsed),
        "metrics (outcome, verification)": best_us(secured_records, range(count)),
    }
    routing = best_us(bare, public)
    stages["middleware on any request"] = best_us(request, public) - routing  # request id, CORS, metrics, auth
    stages["routing and response"] = routing
    verify = best_us(verifier.verify, tokens)
    whole = {
        "TokenVerifier.verify": verify,
        "request in the app": best_us(request, environs),
        "primitive alone": best_us(primitive, parsed),
        "cache hit (a hot token)": best_us(hot.verify, [tokens[0]] * count),
        "cache miss, over verify": best_us(full.verify, tokens) - verify,  # lookup, insertion and eviction
    }
    whole["rest"] = whole["request in the app"] - sum(stages.values())
    return stages | whole


def dpop_stages(count: int) -> dict[str, float]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from service import algorithms, devtoken
    from service.auth.replay.memory import MemoryReplayStore
    from service.auth.replay.shared_memory import SharedMemoryReplayStore
    from service.auth.replay.store import replay_key
    from service.jose import access_token_hash, thumbprint
    from service.keys.keyset import VerificationKey
    from service.settings import DEFAULT_DPOP_REPLAY_CAPACITY
    from service.tokens import jws

    token = "t" * 800  # the access token only enters `ath`
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)]  # a key never seen, every proof
    url = "http://127.0.0.1:8000/secured/ping"
    proofs = [devtoken.sign_proof(key, url=url, token=token) for key in keys]
    parsed = [jws.parse(proof) for proof in proofs]

    def import_key(p) -> VerificationKey:
        public = jwt.PyJWK(p.header["jwk"], algorithms.pyjwt_name("ES256")).key
        return VerificationKey.prepare("ES256", public)

    prepared = [import_key(p) for p in parsed]
    store = MemoryReplayStore()
    records = [replay_key(thumbprint(p.header["jwk"]), p.payload["jti"]) for p in parsed]
    fresh = iter([replay_key("loadtest", str(n)) for n in range(count * ROUNDS)])  # never the same key twice
    with tempfile.TemporaryDirectory(prefix="stages-replay-") as folder:
        table = SharedMemoryReplayStore(os.path.join(folder, "dpop-replay"), DEFAULT_DPOP_REPLAY_CAPACITY)
        table.first_use(replay_key("loadtest", "open"), 301.0)  # mapped (and prefaulted) once, as in a worker
        shared = best_us(lambda _: table.first_use(next(fresh), 301.0), range(count))
    return {
        "proof parse": best_us(jws.parse, proofs),
        "JWK import": best_us(import_key, parsed),
        "thumbprint": best_us(lambda p: thumbprint(p.header["jwk"]), parsed),
        "ath": best_us(lambda _: access_token_hash(token), parsed),
        "signature": best_us(lambda n: prepared[n].verify(parsed[n].signing_input, parsed[n].signature), range(count)),
        "replay record (memory)": best_us(lambda k: store.first_use(k + bytes([len(store) % 251]), 301.0), records),
        "replay record (host-local table)": shared,
    }


def main(count: int = 2000) -> None:
    for algorithm in ("HS256", "RS256", "ES256"):
        print(f"\n{algorithm}, a token seen for the first time (us)")
        for name, value in bearer_stages(algorithm, count).items():
            print(f"  {name:<34}{value:>8.1f}")
    print("\nDPoP, a proof seen for the first time, with a key seen for the first time (us)")
    for name, value in dpop_stages(min(count, 500)).items():
        print(f"  {name:<34}{value:>8.1f}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
