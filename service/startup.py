"""The start-up check: settings and keys must load, or the process stops with one line naming the problem."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from service.keys import load_keys
from service.settings import ConfigError, Settings


def load_or_exit(environ: Mapping[str, str]) -> Settings:
    """Settings from `environ` after checking that its key source loads; exits with status 1 otherwise."""
    try:
        settings = Settings.from_env(environ)
        load_keys(settings)
    except ConfigError as error:
        sys.exit(f"service: configuration error: {error}")
    return settings
