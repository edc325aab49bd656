"""gunicorn settings for the service: `gunicorn -c gunicorn.conf.py service.app:app`.

Values come from the service's Settings (the one place that reads the environment); the start-up check
runs here, in the master, so a bad configuration stops gunicorn with one line before any worker forks.
"""

import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # find `service` from any working directory

from service.ops import balance
from service.ops.gunicorn_logging import logger_for
from service.startup import load_or_exit

settings = load_or_exit(os.environ)

bind = f"0.0.0.0:{settings.port}"
# The proxies whose X-Forwarded-Proto counts (and, with FORWARD_AUTH, whose checks are answered): the service's
# FORWARDED_ALLOW_IPS, the variable gunicorn itself reads, checked at start like every other setting.
forwarded_allow_ips = ",".join(settings.forwarded_allow_ips)
workers = settings.workers
# gthread keeps connections alive and serves each from a thread pool; measured on 2 cores it served
# more pings per second than sync (docs/performance.md). FairShareWorker is gthread whose
# workers take turns accepting, so kept-alive connections spread evenly over them (the same page);
# pre_fork and child_exit below keep its table of who holds how many.
worker_class = "service.ops.balance.FairShareWorker"
threads = 8
# Longer than the 60 s idle timeout of common load balancers, so the balancer (not gunicorn) closes idle
# keep-alive connections and never reuses one that gunicorn is closing.
keepalive = 75
# A worker that stops answering its heartbeat for this long is killed and replaced.
timeout = 30
# On SIGTERM, in-flight requests get this long to finish; below Kubernetes' default 30 s grace period.
graceful_timeout = 25
# Header lines up to 16 KiB, so "Authorization: Bearer <8 KiB token>" fits (gunicorn's default is 8190).
limit_request_field_size = 16384
# Request line and header count stay at gunicorn's defaults: nothing here needs long URLs or many headers.
limit_request_line = 4094
limit_request_fields = 100

loglevel = settings.log_level
errorlog = "-"
accesslog = "-" if settings.access_log else None
# LOG_FORMAT=json: one JSON object per request; text: the format below. Both log the path without the query
# string and no Referer, where clients sometimes put tokens; gunicorn's own lines are scrubbed the same way.
logger_class = logger_for(settings.log_format)
access_log_format = (
    '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(M)sms '
    "request_id=%({x-request-id}o)s auth_error=%({service.auth_error}e)s"
)
# No runtime control socket: its default path is shared by every instance on a host, and signals
# (HUP to reload, TERM to stop) cover what operators need.
control_socket_disable = True


# Metrics (METRICS=1): every worker writes its counts to files in one directory, and a scrape of any worker sums
# them (prometheus_client's multiprocess mode; see service/ops/metrics.py).
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# DPoP: every worker records the proofs it accepted in one table file here that each maps into memory, so a proof
# replayed to another worker of this master is refused too (service/auth/replay/table.py; DPOP_REPLAY_CAPACITY
# proofs, a 24 MiB file by default). An operator's own DPOP_REPLAY_DIR is used as it is.
REPLAY_DIR = "DPOP_REPLAY_DIR"


def on_starting(server):
    # prometheus_client picks multiprocess mode when a worker first imports it, so the variable must be set here,
    # in the master before any fork; a fresh directory per master, so no counts carry over from an earlier run.
    made = []
    if settings.metrics:
        os.environ[METRICS_DIR] = _make_dir(made, "jwt-api-metrics-")
    if settings.dpop != "off" and not settings.dpop_replay_dir:
        os.environ[REPLAY_DIR] = _make_dir(made, "jwt-api-dpop-")
    # Removed at the master's exit by atexit rather than on_exit: gunicorn leaves without on_exit when it cannot
    # bind or stops on an error of its own, and a reload (SIGHUP) runs this file again, forgetting module state.
    # Workers leave through sys.exit too, so only this process removes them. Nothing in them outlives the master:
    # the counts belong to its workers and the proofs mean nothing to the next master.
    atexit.register(_remove_dirs, made, os.getpid())


def _make_dir(made: list[str], prefix: str) -> str:
    made.append(tempfile.mkdtemp(prefix=prefix))
    return made[-1]


def _remove_dirs(made: list[str], master_pid: int) -> None:
    if os.getpid() == master_pid:
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)


def pre_fork(server, worker):
    balance.assign(server, worker)


def child_exit(server, worker):
    balance.release(server, worker)
    # prometheus_client's bookkeeping for a dead worker: its live gauges (none yet) stop being summed; its counter
    # files stay, so totals never go back.
    if settings.metrics and os.environ.get(METRICS_DIR):
        from prometheus_client import multiprocess  # only now: the variable is set, as in the workers

        multiprocess.mark_process_dead(worker.pid, os.environ[METRICS_DIR])
