"""The issuers whose tokens are accepted, each with its own keys, algorithms and audiences.

A token's `iss`, read from its payload before the signature is checked, only picks which configured issuer's keys
verify it: a key of one issuer never verifies a token naming another, even under the same `kid`, and an `iss`
that is not configured is refused before any key is looked up, so it costs no fetch. Each issuer's key source
refreshes, cools down and serves stale keys on its own, so one provider's rotation or outage costs the others
nothing. Issuers that share a key location (one tenant's custom domains) share one key source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.keys.keyset import KeySource

ANY_ISSUER = "any"  # the label of the one issuer when none is configured (any `iss` accepted)


def label_of(name: str | None) -> str:
    """How metrics and /readyz name an issuer: its `iss`, or ANY_ISSUER."""
    return name if name is not None else ANY_ISSUER


@dataclass(frozen=True, eq=False)
class Issuer:
    """One trusted issuer: its `iss` (None: any, when none is configured), the keys that verify its tokens, and
    the algorithms and audiences its tokens may have. `label` names it in metrics and /readyz."""

    name: str | None
    keys: KeySource
    algorithms: frozenset[str]
    audiences: frozenset[str]

    @property
    def label(self) -> str:
        return label_of(self.name)


class Issuers:
    """The configured issuers, looked up by a token's `iss`. With one issuer, every token goes to it (its `iss` is
    then checked with the other claims, as it always was); with several, `iss` must name one of them."""

    def __init__(self, issuers: Sequence[Issuer]):
        if not issuers:
            raise ValueError("at least one issuer")
        self.all = tuple(issuers)
        self._only = self.all[0] if len(self.all) == 1 else None
        self._by_name = {issuer.name: issuer for issuer in self.all}
        # One entry per key source, in order: issuers sharing a source share its start and its readiness.
        self.sources: tuple[KeySource, ...] = tuple({id(i.keys): i.keys for i in self.all}.values())

    def find(self, iss: object) -> Issuer | None:
        """The issuer whose keys verify a token with this `iss` claim; None when it names none of them."""
        if self._only is not None:
            return self._only
        return self._by_name.get(iss) if type(iss) is str else None

    @property
    def ready(self) -> bool:
        """True while at least one issuer's tokens can be verified (see docs/configuration.md, several issuers)."""
        return any(source.ready for source in self.sources)

    def start(self) -> None:
        """Start every key source (a remote one fetches in the background until it holds keys)."""
        for source in self.sources:
            source.start()

    def states(self) -> dict[str, str]:
        """Each issuer's key state by label: "ready" (its keys are held) or "unavailable"."""
        return {issuer.label: "ready" if issuer.keys.ready else "unavailable" for issuer in self.all}
