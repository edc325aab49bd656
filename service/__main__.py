"""`python -m service check`: validate the environment and print the effective settings (secrets masked).

The check gunicorn.conf.py runs at start, made strict to serve as a deploy gate: the service starts without a
dependency that does not answer, `check` does not pass it. Exit statuses: 0 the service would start and every
dependency answered (remote keys fetched, the Redis replay store took a write, the replay directory a file);
1 a configuration error; 2 a usage error (argparse); 3 a dependency did not answer. Each failure is one line
on stderr naming the variable, the URL or host tried and why, never a password or a token.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from urllib.parse import urlsplit, urlunsplit

from service.settings import Settings
from service.startup import load_or_exit


def describe(settings: Settings) -> list[str]:
    """One `name = value` line per setting; the secret shows only its length."""
    lines = [f"key_source = {settings.key_source}"]
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in ("secret", "dpop_nonce_secret", "dpop_replay_store_password") and value is not None:
            value = f"<{len(value)} bytes, hidden>"
        elif field.name == "dpop_replay_store" and value is not None:
            value = _without_password(value)
        elif field.name == "dpop_replay_dir" and value is None and settings.dpop != "off":
            value = "<a temporary directory gunicorn's master makes>"
        elif field.name == "issuer_entries":
            value = "; ".join(_entry(entry) for entry in value)
        elif isinstance(value, tuple):
            value = ", ".join(value)
        lines.append(f"{field.name} = {value}")
    return lines


def _entry(entry) -> str:
    """One JWT_ISSUERS_FILE issuer: its iss and where its keys are."""
    where = entry.jwks_url or entry.jwks_file or "discovery"
    extra = "".join(
        f", {name} {', '.join(values)}"
        for name, values in (("algorithms", entry.algorithms), ("audiences", entry.audiences))
        if values
    )
    return f"{entry.issuer} ({where}{extra})"


def _without_password(url: str) -> str:
    """A Redis URL with its user info replaced, so `check` never prints a password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="<credentials hidden>@" + parts.netloc.rsplit("@", 1)[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="JWT-secured API service tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate the environment and print the effective settings")
    parser.parse_args(argv)
    settings = load_or_exit(os.environ, strict=True)
    print("\n".join(describe(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
