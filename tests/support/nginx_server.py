"""Real nginx (Debian's package) in the foreground on loopback, serving one site file, for the tests of the shipped
nginx configurations (deploy/nginx/, deploy/forward-auth/).

`nginx(site, prefix, port, ready)` writes `site` and a minimal nginx.conf including it into `prefix`, keeps
every file nginx writes there, and serves until its block ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support import processes
from tests.support.debian import debian_binary
from tests.support.gunicorn_server import Server

START_TIMEOUT = 10.0  # seconds for nginx to be ready


def nginx_binary() -> str:
    """The nginx executable, installed from Debian's packages first if it is missing (root only)."""
    return debian_binary("nginx", "nginx")


def main_config(prefix: Path) -> str:
    """A minimal nginx.conf that keeps every file nginx writes inside `prefix` and includes prefix/site.conf."""
    # Workers run as root only when nginx does: the default (nobody) cannot enter pytest's 0700 temp dirs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "logs" / "error.log"} info;
events {{ worker_connections 64; }}
http {{
{temp}
    access_log off;
    include {prefix / "site.conf"};
}}
"""


@contextlib.contextmanager
def nginx(site: str, prefix: Path, port: int, ready: Callable[[], bool]) -> Iterator[Server]:
    """nginx serving `site` (an http-level include listening on `port`) until the block ends, once `ready()` is
    true (it answers as it should through to its upstreams). Logs go to prefix/logs, where `site` writes its own."""
    logs = prefix / "logs"
    logs.mkdir(exist_ok=True)
    (prefix / "temp").mkdir()
    (prefix / "site.conf").write_text(site)
    (prefix / "nginx.conf").write_text(main_config(prefix))
    stdout, stderr = prefix / "stdout.log", prefix / "stderr.log"
    command = [nginx_binary(), "-p", str(prefix), "-e", str(logs / "error.log"), "-c", str(prefix / "nginx.conf")]
    process = processes.spawn([*command, "-g", "daemon off;"], stdout, stderr)
    try:
        processes.wait_until(
            ready,
            "nginx answering through to its upstreams",
            timeout=START_TIMEOUT,
            process=process,
            output=lambda: stderr.read_text() + (logs / "error.log").read_text(),
        )
        yield Server(process, port, stdout, stderr)
    finally:
        processes.stop(process)  # SIGTERM is nginx's fast shutdown
