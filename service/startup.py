"""The start-up check: settings and keys must load, or the process stops with one line naming the problem.

Dependencies (the identity provider's keys, the Redis replay store, the replay directory) are tried too. The
server is lenient about them: each that does not answer is one warning and the service starts, answering 503
until it does. `python -m service check` is strict: the first that does not answer stops it, with the same
words. Exit statuses: 1 for a configuration error, 3 for a dependency that did not answer.

With DPoP on, any replay table in an operator's DPOP_REPLAY_DIR must be one this configuration can use (its
capacity): a table is never reset, which would forget the proofs it holds.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping

from service.auth.replay import REPLAY_FILE, RedisReplayStore, replay_store_for
from service.auth.replay import table as replay_table
from service.keys.fetch import FetchError, network_reason
from service.keys.jwks import RemoteKeySet
from service.keys.sources import load_issuers, prefetch
from service.ops.logs import configure_logging
from service.settings import ConfigError, Settings

# The logger keeps the name it had under ops/ so log lines stay the same.
log = logging.getLogger("service.ops.startup")

CONFIG_ERROR = 1
UNANSWERED = 3  # 2 is argparse's usage error


def load_or_exit(environ: Mapping[str, str], *, strict: bool = False) -> Settings:
    """Settings from `environ` after checking that its key source and DPoP replay store load.

    Exits with CONFIG_ERROR and one line on stderr when the configuration is wrong. A dependency that does not
    answer is a warning, or with `strict` an exit with UNANSWERED and one line. A remote JWKS is fetched here
    once, for every process forked from this one.
    """
    try:
        settings = Settings.from_env(environ)
        # Strict, the one line says it all; the service's own warnings would say it a second time.
        configure_logging("error" if strict else settings.log_level, settings.log_format)
        for failure, meanwhile in _unanswered(settings, environ):
            if strict:
                print(f"service: dependency error: {failure}.", file=sys.stderr)
                sys.exit(UNANSWERED)
            log.warning("%s; %s", failure, meanwhile)
    except ConfigError as error:
        sys.exit(f"service: configuration error: {error}")  # status 1, CONFIG_ERROR
    return settings


def _unanswered(settings: Settings, environ: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(what failed, what the service does meanwhile) for each dependency that does not answer, in order;
    raises ConfigError for one that answers wrongly."""
    issuers = load_issuers(settings)
    several = len(issuers.all) > 1
    fetched: set[int] = set()
    for issuer, entry in zip(issuers.all, settings.trusted_issuers, strict=True):
        keys = issuer.keys
        if not isinstance(keys, RemoteKeySet) or id(keys) in fetched:
            continue  # issuers sharing a key set fetch it once
        fetched.add(id(keys))
        error = prefetch(entry, keys)
        if error is not None:
            where = getattr(error, "url", None) or keys.location.jwks_url or entry.discovery_url
            reason = str(error) if isinstance(error, FetchError) else error.__class__.__name__
            whose = f" for {issuer.name}" if several else ""
            yield (
                f"{_keys_variable(settings, environ)}: cannot get signing keys{whose} from {where}: {reason}",
                f"{'its' if several else 'secured'} requests get 503 until the provider answers",
            )
    if settings.dpop == "off":
        return
    if settings.dpop_replay_store is not None:
        try:
            store = replay_store_for(settings)
        except ValueError:  # what redis-py's URL parser raises; its message may repeat the URL, password included
            raise ConfigError("DPOP_REPLAY_STORE is not a Redis URL redis-py can use (redis://host:port/db).") from None
        if isinstance(store, RedisReplayStore) and (reason := store.check_write()) is not None:
            yield (
                f"DPOP_REPLAY_STORE: cannot record proofs in Redis at {store.address}: {reason}",
                "DPoP requests get 503 until it answers",
            )
    elif settings.dpop_replay_dir is not None:
        reason = _unwritable(settings.dpop_replay_dir)
        if reason is not None:
            yield (
                f"DPOP_REPLAY_DIR: cannot record proofs in {settings.dpop_replay_dir}: {reason}",
                "DPoP requests get 503 until it can",
            )
        else:  # a table of another capacity is a configuration error: it is never reset
            path = os.path.join(settings.dpop_replay_dir, REPLAY_FILE)
            replay_table.check(path, settings.dpop_replay_capacity)


def _keys_variable(settings: Settings, environ: Mapping[str, str]) -> str:
    """The variable that named where the keys are. AUTH0_DOMAIN stands for JWT_JWKS_URL (Settings refuses the
    two together), so the operator is told the one they set."""
    if settings.key_source in ("discovery", "issuers-file"):
        return "JWT_ISSUER" if settings.key_source == "discovery" else "JWT_ISSUERS_FILE"
    return "AUTH0_DOMAIN" if environ.get("AUTH0_DOMAIN", "").strip() else "JWT_JWKS_URL"


def _unwritable(directory: str) -> str | None:
    """Why no file can be made in `directory`, or None after making and removing one there. Only the directory
    is checked: the replay store's file inside it, its name and format are the store's own."""
    try:
        mode = os.stat(directory).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "no such directory"
    except OSError as error:
        return network_reason(error, 0)
    if not stat.S_ISDIR(mode):
        return "not a directory"
    try:
        descriptor, path = tempfile.mkstemp(prefix=".check-", dir=directory)
    except OSError as error:
        return f"not writable ({network_reason(error, 0)})"
    os.close(descriptor)
    os.unlink(path)
    return None
