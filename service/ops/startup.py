"""The start-up check: settings and keys must load, or the process stops with one line naming the problem."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from service.keys.jwks import RemoteKeySet
from service.keys.sources import load_keys, prefetch
from service.ops.logs import configure_logging
from service.settings import ConfigError, Settings


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
    except ConfigError as error:
        sys.exit(f"service: configuration error: {error}")
    return settings
