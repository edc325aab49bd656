from __future__ import annotations

import sys
import threading

import falcon.testing
import pytest

from service import errors
from service.app import create_app
from service.keys.jwks import RemoteKeySet
from service.keys.keyset import KeySet, SharedSecret
from service.tokens import jws
from service.tokens.cache import CachingVerifier
from service.tokens.verifier import TokenVerifier
from tests.support.factories import (
    AUDIENCE,
    ISSUER,
    NOW,
    OTHER_RSA_KEY,
    RSA_KEY,
    SECRET,
    FakeClock,
    hs_settings,
    jwks,
    make_token,
)
from tests.support.jose import public_jwk


class CountingVerifier(TokenVerifier):
    """The real verifier, counting full verifications."""

    calls = 0

    def verify_with_key(self, token):
        self.calls += 1
        return super().verify_with_key(token)


def cached(clock, *, keys=None, max_size=100, ttl=300.0, **options):
    keys = keys or SharedSecret(SECRET.encode(), ("HS256",))
    algorithms = options.pop("algorithms", ("HS256",))
    inner = CountingVerifier.single(
        keys, algorithms=algorithms, audiences=(AUDIENCE,), issuer=ISSUER, leeway=5, clock=clock, **options
    )
    return CachingVerifier(inner, max_size=max_size, ttl=ttl, clock=clock), inner


def test_a_token_seen_before_is_not_verified_again(clock):
    cache, inner = cached(clock)
    token = make_token()
    first = cache.verify(token)
    assert cache.verify(token) is first
    assert inner.calls == 1


def test_cached_claims_are_read_only(clock):
    cache, _ = cached(clock)
    claims = cache.verify(make_token())
    with pytest.raises(TypeError):
        claims["sub"] = "admin"


def test_an_entry_expires_with_its_token_exp_plus_leeway(clock):
    cache, inner = cached(clock)
    token = make_token(exp=int(NOW) + 60)
    cache.verify(token)
    clock.now = NOW + 64.9
    cache.verify(token)
    assert inner.calls == 1
    clock.now = NOW + 65  # exp + 5 s leeway
    with pytest.raises(errors.TokenExpired):
        cache.verify(token)
    assert len(cache) == 0


def test_an_entry_lives_no_longer_than_the_cache_ttl(clock):
    cache, inner = cached(clock, ttl=10)
    token = make_token(exp=int(NOW) + 3600)
    cache.verify(token)
    clock.now = NOW + 9.9
    cache.verify(token)
    assert inner.calls == 1
    clock.now = NOW + 10
    cache.verify(token)
    assert inner.calls == 2


def test_an_entry_ends_at_the_maximum_token_age(clock):
    cache, inner = cached(clock, max_token_age=30)
    token = make_token(exp=int(NOW) + 3600)
    cache.verify(token)
    clock.now = NOW + 35  # iat + 30 s + 5 s leeway
    with pytest.raises(errors.TokenExpired):
        cache.verify(token)
    assert inner.calls == 2


def test_the_cache_holds_at_most_max_size_tokens_oldest_out_first(clock):
    cache, inner = cached(clock, max_size=3)
    tokens = [make_token(sub=f"user-{n}") for n in range(6)]
    for token in tokens:
        cache.verify(token)
        assert len(cache) <= 3
    for token in tokens[3:]:  # the newest three are held
        cache.verify(token)
    assert inner.calls == 6
    cache.verify(tokens[2])  # gone; back in, it takes the place of the oldest held, tokens[3]
    assert inner.calls == 7
    cache.verify(tokens[4])
    cache.verify(tokens[5])
    assert inner.calls == 7
    cache.verify(tokens[3])
    assert inner.calls == 8
    assert len(cache) == 3


def test_a_hit_does_not_keep_a_token_longer_first_in_first_out(clock):
    cache, inner = cached(clock, max_size=3)
    tokens = [make_token(sub=f"user-{n}") for n in range(4)]
    for token in tokens[:3]:
        cache.verify(token)
    cache.verify(tokens[0])  # a hit, which does not move it to the back
    cache.verify(tokens[3])  # evicts tokens[0], the first in
    for token in tokens[1:]:
        cache.verify(token)
    assert inner.calls == 4
    cache.verify(tokens[0])
    assert inner.calls == 5


def test_a_flood_of_distinct_tokens_keeps_the_bound_and_the_newest(clock):
    cache, inner = cached(clock, max_size=50)
    tokens = [make_token(sub=f"user-{n}") for n in range(300)]
    for token in tokens:
        cache.verify(token)
    assert len(cache) == 50
    for token in tokens[-50:]:
        cache.verify(token)
    assert inner.calls == 300


def test_failures_are_never_cached(clock):
    cache, inner = cached(clock)
    bad = make_token(key="x" * 32)
    for _ in range(3):
        with pytest.raises(errors.InvalidSignature):
            cache.verify(bad)
    assert inner.calls == 3
    assert len(cache) == 0


def test_every_lookup_reports_a_hit_or_a_miss(clock):
    lookups = []
    keys = SharedSecret(SECRET.encode(), ("HS256",))
    inner = TokenVerifier.single(
        keys, algorithms=("HS256",), audiences=(AUDIENCE,), issuer=ISSUER, leeway=5, clock=clock
    )
    cache = CachingVerifier(
        inner,
        max_size=10,
        ttl=300,
        clock=clock,
        on_hit=lambda: lookups.append("hit"),
        on_miss=lambda: lookups.append("miss"),
    )
    token = make_token()
    cache.verify(token)
    cache.verify(token)
    with pytest.raises(errors.InvalidSignature):
        cache.verify(make_token(key="x" * 32))
    clock.now += 300  # past the cache TTL: verified in full again
    cache.verify(token)
    assert lookups == ["miss", "hit", "miss", "miss"]


class FixedLocation:
    def __init__(self, document):
        self.document = document
        self.jwks_url = "https://idp.example.com/jwks.json"

    def fetch(self):
        return self.document


def remote_keys(clock, document) -> RemoteKeySet:
    keys = RemoteKeySet(
        FixedLocation(document), ("RS256",), ttl=60, cooldown=0, timeout=1, clock=clock, spawn=lambda fn: fn()
    )
    assert keys.refresh_now()
    return keys


def test_tokens_of_a_key_removed_at_the_provider_leave_the_cache_at_the_next_refresh(clock):
    keys = remote_keys(clock, jwks(public_jwk(RSA_KEY, "rsa-1"), public_jwk(OTHER_RSA_KEY, "rsa-2")))
    cache, inner = cached(clock, keys=keys, algorithms=("RS256",))
    token = make_token("RS256", kid="rsa-1")
    cache.verify(token)
    keys.location.document = jwks(public_jwk(RSA_KEY, "rsa-1"), public_jwk(OTHER_RSA_KEY, "rsa-2"))
    assert keys.refresh_now()  # same keys again: the entry stays
    cache.verify(token)
    assert inner.calls == 1
    keys.location.document = jwks(public_jwk(OTHER_RSA_KEY, "rsa-2"))
    assert keys.refresh_now()
    with pytest.raises(errors.InvalidToken):
        cache.verify(token)
    assert inner.calls == 2


def test_a_refresh_keeps_unchanged_keys_as_the_same_objects():
    document = jwks(public_jwk(RSA_KEY, "rsa-1"))
    first = KeySet.from_jwks(document, ("RS256",))
    again = KeySet.from_jwks(jwks(public_jwk(RSA_KEY, "rsa-1")), ("RS256",), previous=first)
    assert again.resolve("rsa-1", "RS256") is first.resolve("rsa-1", "RS256")
    changed = KeySet.from_jwks(jwks(public_jwk(OTHER_RSA_KEY, "rsa-1")), ("RS256",), previous=first)
    assert not changed.holds(first.resolve("rsa-1", "RS256"))


@pytest.mark.parametrize(("cache_size", "verifications"), [(0, 3), (10, 1)])
def test_cache_size_zero_turns_the_cache_off(cache_size, verifications, monkeypatch):
    parsed = []  # every full verification parses the token once
    monkeypatch.setattr(jws, "parse", lambda token, parse=jws.parse: parsed.append(token) or parse(token))
    client = falcon.testing.TestClient(create_app(hs_settings(cache_size=cache_size), clock=FakeClock()))
    headers = {"Authorization": f"Bearer {make_token()}"}
    for _ in range(3):
        assert client.simulate_get("/secured/ping", headers=headers).status_code == 200
    assert len(parsed) == verifications


def test_a_cached_token_still_gets_403_without_the_scope():
    client = falcon.testing.TestClient(create_app(hs_settings(), clock=FakeClock()))
    headers = {"Authorization": f"Bearer {make_token()}"}
    assert client.simulate_get("/secured/ping", headers=headers).status_code == 200
    for _ in range(2):
        assert client.simulate_get("/secured/scoped/ping", headers=headers).status_code == 403


def test_cache_hits_still_refresh_stale_keys_so_a_removed_key_stops_working(clock):
    keys = remote_keys(clock, jwks(public_jwk(RSA_KEY, "rsa-1")))
    cache, inner = cached(clock, keys=keys, algorithms=("RS256",))
    token = make_token("RS256", kid="rsa-1", exp=int(NOW) + 3600)
    cache.verify(token)
    keys.location.document = jwks(public_jwk(OTHER_RSA_KEY, "rsa-2"))
    clock.now = NOW + 61  # past the key set's 60 s TTL: the next hit starts a refresh
    with pytest.raises(errors.InvalidToken):
        cache.verify(token)
    assert inner.calls == 2


def test_threads_sharing_the_cache_each_get_their_own_claims_and_the_bound_holds(clock):
    # Gthread workers share one cache: lookups, insertions, evictions and stale entries dropped at once, with
    # thread switches forced often. Without the lock, two insertions could both see room and pass max_size.
    cache, _ = cached(clock, max_size=4, ttl=2.0)
    tokens = [make_token(sub=f"user-{n}") for n in range(12)]
    problems: list[str] = []
    ready = threading.Barrier(5)

    def look_up(start: int) -> None:
        ready.wait()
        try:
            for n in range(800):
                token = tokens[(start + n * 5) % len(tokens)]
                if cache.verify(token)["sub"] != f"user-{tokens.index(token)}":
                    problems.append(f"wrong claims for {token}")
                if len(cache) > 4:
                    problems.append(f"{len(cache)} entries")
        except Exception as error:  # any error in a thread is the test's failure
            problems.append(repr(error))

    def age() -> None:  # entries outlive their TTL now and then, so lookups drop them while others evict
        ready.wait()
        for _ in range(100):
            clock.now += 1.5

    threads = [threading.Thread(target=look_up, args=(start,)) for start in range(4)] + [threading.Thread(target=age)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert problems == []
