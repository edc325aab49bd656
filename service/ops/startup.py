"""The start-up check: settings and keys must load, or the process stops with one line naming the problem.

With DPoP on, an operator's DPOP_REPLAY_DIR must be writable and any replay table in it one this configuration
can use (its capacity): a table is never reset, which would forget the proofs it holds.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from service.auth import replay_table
from service.auth.replay import REPLAY_FILE, RedisReplayStore, replay_store_for
from service.keys.jwks import RemoteKeySet
from service.keys.sources import load_keys, prefetch
from service.ops.logs import configure_logging
from service.settings import ConfigError, Settings

log = logging.getLogger(__name__)


def load_or_exit(environ: Mapping[str, str]) -> Settings:
    """Settings from `environ` after checking that its key source loads; exits with status 1 otherwise.

    A remote JWKS is fetched here once, for every process forked from this one.
    """
    try:
        settings = Settings.from_env(environ)
        configure_logging(settings.log_level, settings.log_format)
        keys = load_keys(settings)
        if isinstance(keys, RemoteKeySet):
            prefetch(settings, keys)
        if settings.dpop != "off" and settings.dpop_replay_store is not None:
            _check_replay_store(settings)
        elif settings.dpop != "off" and settings.dpop_replay_dir is not None:
            replay_table.check(os.path.join(settings.dpop_replay_dir, REPLAY_FILE), settings.dpop_replay_capacity)
    except ConfigError as error:
        sys.exit(f"service: configuration error: {error}")
    return settings


def _check_replay_store(settings: Settings) -> None:
    """A Redis replay store that does not answer does not stop the start (DPoP requests get 503 until it does)."""
    try:
        store = replay_store_for(settings)
    except ValueError:  # what redis-py's URL parser raises; its message may repeat the URL, password included
        raise ConfigError("DPOP_REPLAY_STORE is not a Redis URL redis-py can use (redis://host:port/db).") from None
    if isinstance(store, RedisReplayStore) and not store.ping():
        log.warning("the DPoP replay store (DPOP_REPLAY_STORE) does not answer; DPoP requests get 503 until it does")
