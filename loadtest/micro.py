"""In-process cost of one verification: PyJWT's `jwt.decode` against the service's own path.

    .venv/bin/python -m loadtest.micro [ROUNDS]
    .venv/bin/python -m loadtest.micro hot [ROUNDS]

Both paths check the same things (signature, exp, aud, iss); the service's path is `TokenVerifier.verify`
(strict parse, then PyJWT's algorithm object) without the token cache, and with it for a repeated token.
Prints microseconds per call, best of 5 runs. A benchmark, not a test.

`hot` times each hot-path choice docs/performance.md explains ("Why the hot path looks like this"), the trick
against the plain way, at the smallest step where the two differ, the two timed in turn in every run so that a busy
machine slows both alike: the JSON scanner called directly against `JSONDecoder.decode` (a token's header and
payload), the histogram child's per-bucket values against `Histogram.observe` (one observation recorded and
flushed, in prometheus_client's multiprocess mode as under gunicorn), a cache read without the cache's lock
against one under it, and FIFO eviction from a full cache with `OrderedDict.popitem` against a plain dict's
`del d[next(iter(d))]`. It also times, for scale, the calls these steps sit in and one prometheus_client
increment in multiprocess mode (what the metrics' pending tally saves).
"""

from __future__ import annotations

import bisect
import os
import sys
import tempfile
import threading
import time
import timeit
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import jwt
from cryptography.hazmat.primitives import serialization

from loadtest.scenarios import RSA_KID, rsa_signing_key
from service.keys.keyset import KeySet, SharedSecret
from service.tokens import jws
from service.tokens.cache import CachingVerifier
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
        verifier = TokenVerifier.single(keys, algorithms=(name,), audiences=(AUDIENCE,), issuer=ISSUER, leeway=5)
        verifier.verify(token)  # both paths must accept the token before they are timed
        jwt.decode(token, pyjwt_key, algorithms=[name], audience=AUDIENCE, issuer=ISSUER)
        pyjwt = best_microseconds(
            partial(jwt.decode, token, pyjwt_key, [name], audience=AUDIENCE, issuer=ISSUER), rounds
        )
        ours = best_microseconds(partial(verifier.verify, token), rounds)
        print(f"{name:<10}{pyjwt:>12.1f}us{ours:>12.1f}us{ours / pyjwt:>8.2f}")


CACHE_SIZE = 10_000  # JWT_CACHE_SIZE's default: the full cache the eviction step runs on
OBSERVATIONS = 1_000  # observations recorded between two flushes of the metrics tally


# (name, internal way, plain way, calls per timing, steps per call)
Pair = tuple[str, Callable[[], object], Callable[[], object], int, int]


def interleaved(pairs: list[Pair]) -> list[tuple[str, float, float]]:
    """Microseconds per step of each way: the two timed in turn, their order swapped every run; best of 5 runs."""
    best = {name: [float("inf"), float("inf")] for name, *_ in pairs}
    for run in range(5):
        for name, internal, plain, number, steps in pairs:
            order = ((0, internal), (1, plain)) if run % 2 == 0 else ((1, plain), (0, internal))
            for slot, call in order:
                microseconds = timeit.timeit(call, number=number) / (number * steps) * 1e6
                best[name][slot] = min(best[name][slot], microseconds)
    return [(name, *best[name]) for name, *_ in pairs]


def json_pair(token: str, rounds: int) -> Pair:
    """A token's header and payload decoded the way jws does, and with JSONDecoder.decode."""
    header, payload, _ = token.split(".")
    texts = [jws._decode(segment.encode().translate(jws._TO_STANDARD)).decode() for segment in (header, payload)]
    decode = jws._JSON.decode

    def internal() -> None:
        for text in texts:
            jws._json_value(text)

    def plain() -> None:
        for text in texts:
            decode(text)

    return ("JSON of header + payload: scan_once / decode", internal, plain, rounds * 10, 1)


def histogram_pair(rounds: int) -> Pair:
    """One observation added to the tally and flushed to the child's values, against one Histogram.observe.

    Both hold a lock per observation, as Metrics does; the tally is flushed every OBSERVATIONS observations.
    """
    from prometheus_client import CollectorRegistry, Histogram

    from service.ops.metrics import REPLAY_BUCKETS, _Route

    histogram = Histogram("micro_seconds", "micro", buckets=REPLAY_BUCKETS, registry=CollectorRegistry())
    series, lock = _Route(histogram), threading.Lock()
    seconds = [(n % 997) / 997 * 0.002 for n in range(OBSERVATIONS)]  # spread over the low buckets

    def internal() -> None:
        pending: dict[Callable[[float], None], float] = {}
        for amount in seconds:
            bucket = series.buckets[bisect.bisect_left(series.bounds, amount)]
            with lock:
                pending[bucket] = pending.get(bucket, 0) + 1
                pending[series.add_seconds] = pending.get(series.add_seconds, 0) + amount
        for increment, total in pending.items():
            increment(total)

    def plain() -> None:
        observed: list[float] = []
        for amount in seconds:
            with lock:
                observed.append(amount)
        for amount in observed:
            histogram.observe(amount)

    return ("histogram observation: _buckets / observe", internal, plain, max(1, rounds // 200), OBSERVATIONS)


def cache_read_pair(verifier: CachingVerifier, token: str, rounds: int) -> Pair:
    """The cache's entry lookup without its lock and under it."""
    entries, lock = verifier._entries, verifier._lock

    def locked() -> object:
        with lock:
            return entries.get(token)

    return ("cache read: unlocked / under the lock", partial(entries.get, token), locked, rounds * 50, 1)


def eviction_pair(rounds: int) -> Pair:
    """One eviction and one insertion on a full CACHE_SIZE-entry cache, OrderedDict against dict."""
    ordered = OrderedDict((f"token-{n}", n) for n in range(CACHE_SIZE))
    plain_dict = dict(ordered)
    fresh = iter(range(CACHE_SIZE, sys.maxsize))

    def internal() -> None:
        ordered.popitem(last=False)
        ordered[f"token-{next(fresh)}"] = 0

    def plain() -> None:
        del plain_dict[next(iter(plain_dict))]
        plain_dict[f"token-{next(fresh)}"] = 0

    # Enough evictions per timing to span the plain dict's resizes, where its walk over deleted slots ends.
    name = f"evict + insert, {CACHE_SIZE} entries: OrderedDict / dict"
    return (name, internal, plain, max(rounds * 10, CACHE_SIZE), 1)


def hot(rounds: int = 2000) -> None:
    with tempfile.TemporaryDirectory(prefix="micro-") as scratch:
        # prometheus_client picks multiprocess mode at import: set it before anything imports it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
        _, token, _, keys = cases()[0]
        inner = TokenVerifier.single(keys, algorithms=("HS256",), audiences=(AUDIENCE,), issuer=ISSUER, leeway=5)
        cache = CachingVerifier(inner, max_size=CACHE_SIZE, ttl=300.0)
        cache.verify(token)  # the entry the hit and the cache read find
        rows = interleaved(
            [
                json_pair(token, rounds),
                histogram_pair(rounds),
                cache_read_pair(cache, token, rounds),
                eviction_pair(rounds),
            ]
        )
        from prometheus_client import CollectorRegistry, Counter

        counter = Counter("micro_counts", "micro", registry=CollectorRegistry())
        scale = [
            ("one Counter.inc, multiprocess mode", counter.inc),
            ("jws.parse, HS256 token", partial(jws.parse, token)),
            ("TokenVerifier.verify, HS256 (cold)", partial(inner.verify, token)),
            ("CachingVerifier.verify, hit", partial(cache.verify, token)),
        ]
        sizes = [(name, best_microseconds(call, rounds)) for name, call in scale]
    print(f"{'step: trick / plain way':<58}{'trick':>10}{'plain':>10}{'saved':>10}{'ratio':>7}")
    for name, internal, plain in rows:
        print(f"{name:<58}{internal:>8.2f}us{plain:>8.2f}us{plain - internal:>8.2f}us{internal / plain:>7.2f}")
    print(f"\n{'for scale':<58}")
    for name, microseconds in sizes:
        print(f"{name:<58}{microseconds:>8.2f}us")


if __name__ == "__main__":
    if sys.argv[1:2] == ["hot"]:
        hot(*(int(arg) for arg in sys.argv[2:]))
    else:
        main(*(int(arg) for arg in sys.argv[1:]))
