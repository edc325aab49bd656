"""Public keys fetched from the identity provider over HTTP, kept fresh without stalling requests.

`RemoteKeySet` answers `resolve(kid, algorithm)` from the keys it holds, so a known `kid` never waits on the
network. Refreshes run in a background thread, one at a time, at most one per cooldown: when the keys are
older than the TTL, when a token names an unknown `kid` (that request waits up to the fetch timeout for the
refresh), and while no keys are held. A failed refresh keeps the keys that were good. With no keys at all,
requests get `JwksUnavailable` (503) and the store keeps trying by itself.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.errors import InvalidToken, JwksUnavailable, retry_after
from service.keys import fetch
from service.keys.keyset import KeySet, VerificationKey

log = logging.getLogger(__name__)


class IssuerMismatch(fetch.FetchError):
    """The discovery document names another issuer than the configured one."""


class UnusableKeys(fetch.FetchError, ValueError):
    """The JWKS was fetched but holds no key that verifies the allowed algorithms (or is not a JWKS at all)."""


class JwksLocation:
    """Where the JWKS is: a fixed URL, or the `jwks_uri` of the issuer's OpenID Connect discovery document."""

    def __init__(
        self,
        *,
        timeout: float,
        jwks_url: str | None = None,
        issuer: str | None = None,
        discovery_url: str | None = None,
        get_json: Callable[[str, float], object] = fetch.get_json,
    ):
        self.jwks_url = jwks_url
        self._issuer = issuer
        self._discovery_url = discovery_url
        self._timeout = timeout
        self._get_json = get_json

    def fetch(self) -> object:
        """The JWKS document; discovers its URL first when it is not known yet. Raises FetchError.

        A discovered URL that stops answering is looked up again on the next fetch, in case it moved.
        """
        if self.jwks_url is None:
            self.jwks_url = self._discover()
        try:
            return self._get_json(self.jwks_url, self._timeout)
        except fetch.FetchError:
            if self._discovery_url is not None:
                self.jwks_url = None
            raise

    def _discover(self) -> str:
        url = self._discovery_url
        document = self._get_json(url, self._timeout)
        if not isinstance(document, dict):
            raise fetch.FetchError("the discovery document is not a JSON object", url)
        if document.get("issuer") != self._issuer:
            raise IssuerMismatch("the discovery document names another issuer than JWT_ISSUER", url)
        jwks_uri = document.get("jwks_uri")
        if not fetch.is_secure_url(jwks_uri):
            raise fetch.FetchError("the discovery document has no https jwks_uri", url)
        return jwks_uri


@dataclass(frozen=True)
class Snapshot:
    """Keys with the monotonic time they were fetched at: what the gunicorn master hands to its workers."""

    keys: KeySet
    fetched_at: float


def _spawn_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="jwks-refresh", daemon=True).start()


def ignore_fetch(result: str) -> None:
    """The default `on_fetch`: record nothing."""


class RemoteKeySet:
    """A KeySource over a JwksLocation (anything with `fetch()` and `jwks_url`).

    `ttl`, `cooldown` and `timeout` are seconds on `clock` (time.monotonic by default); `spawn` runs a
    refresh in the background (a daemon thread by default); `snapshot` is keys fetched before this process
    started, such as those the gunicorn master hands to its workers. `on_fetch` is called after every fetch
    with "ok" (keys loaded) or "error" (service.ops.metrics counts them).
    """

    def __init__(
        self,
        location: JwksLocation,
        algorithms: tuple[str, ...],
        *,
        ttl: float,
        cooldown: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] = _spawn_thread,
        snapshot: Snapshot | None = None,
        on_fetch: Callable[[str], None] = ignore_fetch,
    ):
        self.location = location
        self._algorithms = algorithms
        self._ttl, self._cooldown, self._timeout = ttl, cooldown, timeout
        self._clock = clock
        self._spawn = spawn
        self._lock = threading.Lock()
        self._snapshot = snapshot
        self._on_fetch = on_fetch
        self._last_attempt = -math.inf
        self._in_flight: threading.Event | None = None
        self.last_error: Exception | None = None

    @property
    def ready(self) -> bool:
        """True once keys are held (they stay held through failed refreshes)."""
        return self._snapshot is not None

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def start(self) -> None:
        """Begin fetching in the background when no keys are held yet (at most once per cooldown).

        Called when the app is built and by every readiness probe, so a process that started while the
        provider was down recovers even before secured traffic reaches it.
        """
        if not self.ready:
            self._refresh_in_background()

    def refresh_now(self) -> bool:
        """Fetch in the calling thread (at start, before forking); True when keys were loaded."""
        done = threading.Event()
        with self._lock:
            self._last_attempt = self._clock()
            self._in_flight = done
        self._refresh(done)
        return self.last_error is None

    def resolve(self, kid: str | None, algorithm: str) -> VerificationKey:
        snapshot = self._snapshot
        if snapshot is None:
            pending = self._refresh_in_background()
            if pending is not None:
                pending.wait(self._timeout)  # the provider may just have come back
            snapshot = self._snapshot
            if snapshot is None:
                raise JwksUnavailable(retry_after=retry_after(self._cooldown))
        self._refresh_if_stale(snapshot)  # in the background: this request uses the keys held now
        try:
            return snapshot.keys.resolve(kid, algorithm)
        except InvalidToken:
            pending = self._refresh_in_background()
            if pending is None:
                raise
        pending.wait(self._timeout)
        return self._snapshot.keys.resolve(kid, algorithm)

    def holds(self, key: VerificationKey) -> bool:
        # Asked on every token-cache hit, so stale keys get refreshed even when no request resolves a key.
        snapshot = self._snapshot
        if snapshot is None:
            return False
        if self._refresh_if_stale(snapshot):
            snapshot = self._snapshot  # a refresh that already finished decides
        return snapshot.keys.holds(key)

    def _refresh_if_stale(self, snapshot: Snapshot) -> bool:
        """Start a background refresh when `snapshot` is older than the TTL; True when it was."""
        stale = self._clock() >= snapshot.fetched_at + self._ttl
        if stale:
            self._refresh_in_background()
        return stale

    def _refresh_in_background(self) -> threading.Event | None:
        """The refresh in flight, or a new one unless the cooldown forbids it (then None)."""
        with self._lock:
            if self._in_flight is not None:
                return self._in_flight
            now = self._clock()
            if now < self._last_attempt + self._cooldown:
                return None
            self._last_attempt = now
            self._in_flight = done = threading.Event()
        self._spawn(lambda: self._refresh(done))
        return done

    def _keys_from(self, document: object) -> KeySet:
        """The usable keys of a fetched JWKS; raises UnusableKeys naming the URL it came from."""
        snapshot = self._snapshot
        try:
            keys = KeySet.from_jwks(document, self._algorithms, previous=snapshot.keys if snapshot else None)
            if not len(keys):
                raise ValueError(f"no signing key for {', '.join(self._algorithms)}")
        except ValueError as error:
            raise UnusableKeys(f"no usable key ({error})", self.location.jwks_url) from None
        return keys

    def _refresh(self, done: threading.Event) -> None:
        try:
            keys = self._keys_from(self.location.fetch())
        except fetch.FetchError as error:
            self.last_error = error
            held = "keeping the keys held" if self.ready else "no keys held yet"
            log.warning("JWKS refresh failed (%s); %s", fetch.described(error), held)
        except Exception as error:  # never let a refresh thread die silently
            self.last_error = error
            log.exception("JWKS refresh failed unexpectedly")
        else:
            self.last_error = None
            self._snapshot = Snapshot(keys, self._clock())
            log.info("JWKS refreshed: %d signing keys", len(keys))
        finally:
            self._on_fetch("ok" if self.last_error is None else "error")
            with self._lock:
                self._in_flight = None
            done.set()
