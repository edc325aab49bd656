"""The image of the Dockerfile, built by `make image` with podman and run as deploy/kubernetes/deployment.yaml runs it.

No registry is needed: the base is Debian 12's minbase with its Python 3.11, made by mmdebstrap and imported
into podman under a tag that names its recipe, so later runs on the same machine reuse it. The container gets
the manifest's settings: a read-only root with a memory /tmp, uid and gid 10001, no capabilities, no new
privileges, its memory and CPU limits, its environment (with a JWKS file mounted read-only instead of the
Auth0 tenant, so nothing in the container needs the network). Without podman, runc and mmdebstrap (Debian's
packages) the module is skipped; .ci/run installs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.ops.metrics import FLUSH_INTERVAL
from service.settings import DEFAULT_PORT
from tests.support import ROOT, scrape
from tests.support.factories import AUDIENCE, ISSUER, default_jwks, wall_clock_token, write_jwks
from tests.support.gunicorn_server import Response
from tests.support.kubernetes import env_values, load
from tests.support.processes import answers, descendants, free_port, wait_until

DEPLOYMENT = load("deployment.yaml")
POD = DEPLOYMENT["spec"]["template"]["spec"]
(API,) = POD["containers"]

# crun fails on this machine's mix of cgroup v1 and v2 hierarchies, and runc's default rlimits are above what the
# sandbox lets a container set; both flags go to every command that starts a container (RUN steps included).
RUNTIME = ("--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
BASE_RECIPE = (
    "mmdebstrap",
    "--variant=minbase",
    "--include=python3,python3-venv,ca-certificates",
    # merged /usr set up by mmdebstrap itself: the usrmerge package would pull in perl (about 50 MB) for nothing.
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    # Documentation, manual pages and translations (about 45 MB) are not read in a container; licences stay.
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "bookworm",
)
BASE_REPOSITORY = "localhost/jwt-api-test-base"
BASE = f"{BASE_REPOSITORY}:bookworm-{hashlib.sha256(' '.join(BASE_RECIPE).encode()).hexdigest()[:12]}"
IMAGE = "localhost/jwt-api-test:latest"  # one tag, rebuilt by every run
TEST_LABEL = "jwt-api-test"  # on the base, so every image built from it carries it: see prune_test_images()
VERSION = "0.0.0-test"
SOURCE = "https://git.example.com/jwt-api"
# The host's CA bundle: HTTPS from a build here goes through a proxy with its own CA, which only this bundle
# holds. Debian's pip reads it; a build volume is there for RUN steps only and never committed to a layer.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_TIMEOUT = 600.0  # seconds for mmdebstrap and podman import (about a minute here)
BUILD_TIMEOUT = 600.0  # seconds for make image (about 15 s here once the base exists)
START_TIMEOUT = 30.0  # seconds for a started container to answer /healthz
COMMAND_TIMEOUT = 60.0  # seconds for any other podman command
METRICS_FLUSHED_WITHIN = FLUSH_INTERVAL * 3 + 2  # seconds: a worker's background flush, with room for a loaded machine
MAX_IMAGE_BYTES = 200_000_000
PRE_STOP = API["lifecycle"]["preStop"]["exec"]["command"]
TMP = "/tmp"  # noqa: S108 (the one writable directory the manifest mounts)
GRACE = POD["terminationGracePeriodSeconds"]
WORKERS = int(env_values(API)["WEB_CONCURRENCY"])  # the CPU limit
MEMORY_LIMIT = API["resources"]["limits"]["memory"]


def podman(*arguments: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
    """Run `podman arguments...` and return its stdout; fails the test, with podman's stderr, if it fails."""
    done = subprocess.run(("podman", *arguments), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(arguments)} exited with {done.returncode}:\n{done.stderr}")
    return done.stdout


def mebibytes(quantity: str) -> int:
    """A Kubernetes memory quantity in Mi ("192Mi") in MiB, the unit of podman's "m" suffix."""
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


def base_image(scratch: Path) -> str:
    """BASE, made by BASE_RECIPE and `podman import` (in `scratch`) unless a run on this machine made it already."""
    if image_exists(BASE):
        return BASE
    if not which("mmdebstrap"):
        pytest.skip(f"{BASE} is not there and mmdebstrap, which makes it, is not installed: apt-get install mmdebstrap")
    tarball = scratch / "base.tar"
    made = subprocess.run((*BASE_RECIPE, str(tarball)), capture_output=True, text=True, timeout=BASE_TIMEOUT)
    if made.returncode != 0:
        pytest.fail(f"mmdebstrap exited with {made.returncode}:\n{made.stderr[-5000:]}")
    podman("import", "--change", f"LABEL {TEST_LABEL}=1", str(tarball), BASE, timeout=BASE_TIMEOUT)
    tarball.unlink()
    # Bases of earlier recipes are of no more use.
    for reference in podman("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPOSITORY).split():
        if reference != BASE:
            podman("rmi", reference, check=False)
    return BASE


def image_exists(reference: str) -> bool:
    return subprocess.run(("podman", "image", "exists", reference), timeout=COMMAND_TIMEOUT).returncode == 0


def which(tool: str) -> str | None:
    """The tool's path, looked up in the sbin directories too (runc, iptables), whatever PATH says."""
    return shutil.which(tool, path=os.pathsep.join((os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin")))


def prune_test_images() -> None:
    """Removes untagged images built on the test base: earlier IMAGEs and build stages left by rebuilds."""
    podman("image", "prune", "--force", "--filter", f"label={TEST_LABEL}=1")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """IMAGE, built by `make image` on the test base; the build's output is in the failure message."""
    missing = [tool for tool in ("podman", "runc", "iptables") if not which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; Debian: apt-get install podman runc iptables mmdebstrap")
    scratch = tmp_path_factory.mktemp("image")
    base = base_image(scratch)
    flags = [*RUNTIME]
    if HOST_CA_BUNDLE.is_file():
        flags += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    log = scratch / "build.log"
    with log.open("w") as output:
        built = subprocess.run(
            (
                "make",
                "--no-print-directory",
                "-C",
                str(ROOT),
                "image",
                "CONTAINER_ENGINE=podman",
                f"IMAGE={IMAGE}",
                f"IMAGE_BASE={base}",
                f"IMAGE_VERSION={VERSION}",
                f"IMAGE_SOURCE={SOURCE}",
                f"IMAGE_BUILD_FLAGS={' '.join(flags)}",
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
        )
    prune_test_images()
    if built.returncode != 0:
        pytest.fail(f"make image exited with {built.returncode}:\n{log.read_text()[-5000:]}")
    return IMAGE


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """A directory holding jwks.json (tests.support.factories.default_jwks()), readable by the container's uid."""
    directory = tmp_path_factory.mktemp("keys")
    write_jwks(directory / "jwks.json", default_jwks())
    directory.chmod(0o755)
    (directory / "jwks.json").chmod(0o644)
    return directory


@dataclass(frozen=True)
class Container:
    """A running container of the image: its podman name and the loopback port its port 8000 is published on."""

    name: str
    port: int

    def get(self, path: str, token: str | None = None, timeout: float = 5.0) -> Response:
        """GET `path` on a fresh connection, with `Authorization: Bearer <token>` when a token is given."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    def logs(self) -> str:
        """What the container wrote so far: gunicorn's error log (stderr), then the access log (stdout)."""
        done = subprocess.run(("podman", "logs", self.name), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        return done.stderr + done.stdout

    def state(self) -> dict:
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name))


def container_environment(keys_path: str) -> dict[str, str]:
    """The manifest's environment, its identity provider replaced by the JWKS file (no network in the test)."""
    environ = env_values(API)
    del environ["AUTH0_DOMAIN"]
    return {
        **environ,
        "JWT_JWKS_FILE": keys_path,
        "JWT_ALGORITHMS": "RS256,ES256",
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
    }


def run_arguments(keys: Path) -> list[str]:
    """`podman run` options for each promise of deployment.yaml's pod and container."""
    pod_security, security = POD["securityContext"], API["securityContext"]
    limits = API["resources"]["limits"]
    (tmp,) = [mount for mount in API["volumeMounts"] if mount["mountPath"] == TMP]
    (volume,) = [volume for volume in POD["volumes"] if volume["name"] == tmp["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    memory = f"{mebibytes(MEMORY_LIMIT)}m"
    arguments = [
        *RUNTIME,
        "--user",
        f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}",
        "--read-only",
        # podman's --read-only also mounts writable tmpfs on /run and /var/tmp, which a pod does not have.
        "--read-only-tmpfs=false",
        "--tmpfs",
        f"{TMP}:rw,nosuid,nodev,size={mebibytes(volume['emptyDir']['sizeLimit'])}m,mode=1777",
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        memory,
        "--memory-swap",
        memory,  # no swap beyond the limit, as on a Kubernetes node
        "--cpus",
        str(limits["cpu"]),
        # /mnt exists in the image, so podman makes no mount point in the container's own layer.
        "--volume",
        f"{keys}:/mnt:ro",
    ]
    for name, value in container_environment("/mnt/jwks.json").items():
        arguments += ["--env", f"{name}={value}"]
    return arguments


@contextlib.contextmanager
def running(image: str, keys: Path) -> Iterator[Container]:
    """The image running detached until the block ends, then removed (stopped first if it still runs)."""
    port = free_port()
    name = f"jwt-api-test-{os.getpid()}-{port}"
    (container_port,) = [entry["containerPort"] for entry in API["ports"]]
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--publish",
        f"127.0.0.1:{port}:{container_port}",
        *run_arguments(keys),
        image,
    )
    container = Container(name, port)
    try:
        wait_until(
            lambda: answers(port, "/healthz"),
            "the container answering /healthz",
            timeout=START_TIMEOUT,
            running=lambda: container.state()["Running"],
            output=container.logs,
        )
        # /healthz answers once one worker is up; gunicorn forks the others a moment apart. Tests that count or
        # inspect the workers start once every one of them runs.
        wait_until(
            lambda: len(descendants(container.state()["Pid"])) == 1 + WORKERS,
            f"the master and its {WORKERS} workers running",
            timeout=START_TIMEOUT,
            running=lambda: container.state()["Running"],
            output=container.logs,
        )
        yield container
    finally:
        podman("rm", "--force", "--time", "0", "--ignore", name, check=False)


@pytest.fixture(scope="module")
def container(image, keys) -> Iterator[Container]:
    with running(image, keys) as started:
        yield started


def in_image(image: str, script: str, *arguments: str) -> str:
    """Output of a Python script run with `arguments` in a fresh container of `image` (no network), then removed."""
    name = f"jwt-api-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        # Removed apart rather than with --rm: the script's exit status is then the one podman reports.
        run = ("run", "--name", name, "--network", "none", *RUNTIME, "--entrypoint", "python3", image)
        return podman(*run, "-c", script, *arguments)
    finally:
        podman("rm", "--force", "--time", "0", "--ignore", name, check=False)


def host_processes(pid: int) -> list[Path]:
    """/proc/<pid> of a host process and of all its live descendants."""
    return [Path(f"/proc/{each}") for each in descendants(pid)]


def status_fields(proc: Path) -> dict[str, str]:
    """/proc/<pid>/status as a dict of its fields."""
    lines = (proc / "status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_image_is_set_up_as_the_deployment_runs_it(image):
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image))
    pod_security = POD["securityContext"]
    assert config["User"] == f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}" == "10001:10001"
    assert config["Cmd"] == ["gunicorn", "-c", "gunicorn.conf.py", "service.app:app"]
    assert not config.get("Entrypoint")
    assert set(config["ExposedPorts"]) == {f"{DEFAULT_PORT}/tcp"} == {f"{API['ports'][0]['containerPort']}/tcp"}
    assert f"PORT={DEFAULT_PORT}" in config["Env"]
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert config["Labels"]["org.opencontainers.image.source"] == SOURCE


# Run in the image, so requirement markers are evaluated for its Python; packaging is a runtime requirement.
INVENTORY = """
import importlib.metadata, json, os, shutil, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
wanted = [Requirement(line) for line in sys.argv[1:]]
print(json.dumps({
    "installed": sorted(canonicalize_name(found.metadata["Name"]) for found in importlib.metadata.distributions()),
    "required": sorted(canonicalize_name(want.name) for want in wanted if not want.marker or want.marker.evaluate()),
    "app": sorted(os.listdir("/app")),
    "tools": [tool for tool in ("pip", "pip3", "gcc", "cc", "make", "pytest", "ruff") if shutil.which(tool)],
}))
"""


def test_image_holds_the_runtime_requirements_and_the_service_only(image):
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    found = json.loads(in_image(image, INVENTORY, *filter(None, lines)))
    assert found["installed"] == found["required"]  # what requirements.txt names for this Python, nothing else
    assert found["app"] == ["gunicorn.conf.py", "service"]
    assert found["tools"] == []  # no build, test or lint tool on the PATH


def test_host_ca_bundle_used_by_the_build_is_not_in_the_image(image):
    script = (
        "import hashlib; print(hashlib.sha256(open('/etc/ssl/certs/ca-certificates.crt', 'rb').read()).hexdigest())"
    )
    assert in_image(image, script) == in_image(BASE, script)  # the base's own bundle, untouched


def test_image_is_under_200_mb_with_a_venv_layer_of_its_runtime_requirements(image):
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image))
    history = json.loads(podman("history", "--format", "json", image))
    (venv,) = [layer["size"] for layer in history if layer["CreatedBy"].rstrip().endswith(" in /opt/venv")]
    base = int(podman("image", "inspect", "--format", "{{.Size}}", BASE))
    print(f"image {size / 1e6:.1f} MB: base {base / 1e6:.1f} MB, venv layer {venv / 1e6:.1f} MB")
    assert size < MAX_IMAGE_BYTES
    assert 0 < venv < size - base


def test_public_and_secured_pings_readyz_and_metrics_answer(container):
    public = container.get("/ping")
    assert (public.status, public.text) == (200, "All good. You don't need to be authenticated to call this")
    secured = container.get("/secured/ping", wall_clock_token("RS256"))
    assert (secured.status, secured.text) == (200, "All good. You only get this message if you're authenticated")
    assert container.get("/secured/ping").status == 401
    ready = container.get("/readyz")
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    assert wait_for_secured_pings_in_metrics(container) >= 1


def wait_for_secured_pings_in_metrics(container: Container) -> float:
    """The 200s to /secured/ping that /metrics counts, once it counts any: another worker's are up to a flush late."""
    deadline = time.monotonic() + METRICS_FLUSHED_WITHIN
    while True:
        metrics = container.get("/metrics")
        assert metrics.status == 200
        count = scrape.value(metrics.text, "jwt_api_requests_total", route="/secured/ping", status="200")
        if count or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def test_every_process_runs_as_uid_10001_with_no_capabilities_and_no_new_privileges(container):
    processes = host_processes(container.state()["Pid"])  # rootful podman: no user namespace, host ids are the ids
    assert len(processes) == 1 + WORKERS  # the master and its workers
    for proc in processes:
        fields = status_fields(proc)
        assert fields["Uid"].split() == ["10001"] * 4, proc  # real, effective, saved and filesystem
        assert fields["Gid"].split() == ["10001"] * 4, proc
        assert int(fields["CapEff"], 16) == int(fields["CapPrm"], 16) == int(fields["CapBnd"], 16) == 0, proc
        assert fields["NoNewPrivs"] == "1", proc


def test_master_and_workers_serve_within_the_memory_limit(container):
    assert container.get("/secured/ping", wall_clock_token("RS256")).status == 200
    script = (
        "from pathlib import Path\n"
        "v1, v2 = Path('/sys/fs/cgroup/memory'), Path('/sys/fs/cgroup')\n"
        "limit, usage = (v1 / 'memory.limit_in_bytes', v1 / 'memory.usage_in_bytes') if v1.is_dir() else"
        " (v2 / 'memory.max', v2 / 'memory.current')\n"
        "print(limit.read_text().strip(), usage.read_text().strip())"
    )
    limit, usage = map(int, podman("exec", container.name, "python3", "-c", script).split())
    print(f"memory: {usage / 2**20:.1f} MiB of {limit / 2**20:.0f} MiB, master and {WORKERS} workers")
    assert limit == mebibytes(MEMORY_LIMIT) * 2**20
    assert usage < limit
    assert not container.state()["OOMKilled"]


def test_only_tmp_is_writable_and_only_tmp_is_written(container):
    assert container.get("/metrics").status == 200  # the workers' metrics files exist by now
    mounts = {
        fields[1]: fields[3].split(",")
        for fields in map(str.split, podman("exec", container.name, "cat", "/proc/mounts").splitlines())
    }
    assert "ro" in mounts["/"]
    # /dev (shared memory, which a pod has too), /proc and /sys aside, /tmp is the one writable mount.
    writable = {path for path, options in mounts.items() if "rw" in options}
    assert {path for path in writable if path.split("/")[1] not in ("dev", "proc", "sys")} == {TMP}
    written = podman("exec", container.name, "ls", TMP).split()
    assert [name for name in written if name.startswith("jwt-api-metrics-")], written
    assert "Read-only file system" not in container.logs()


def test_sigterm_during_a_request_lets_it_complete_and_exits_0_within_the_grace_period(image, keys):
    with running(image, keys) as container:
        head = (
            f"GET /secured/ping HTTP/1.1\r\nHost: 127.0.0.1:{container.port}\r\n"
            f"Authorization: Bearer {wall_clock_token('RS256')}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", container.port), timeout=GRACE) as request:
            request.sendall(head[: len(head) // 2])  # the worker that accepted it waits for the rest
            # As the kubelet does: the preStop command runs in the container, which keeps serving meanwhile.
            with subprocess.Popen(("podman", "exec", container.name, *PRE_STOP), stdout=subprocess.DEVNULL) as pre_stop:
                assert container.get("/ping").status == 200
                assert pre_stop.wait(timeout=COMMAND_TIMEOUT) == 0
            # Then SIGTERM, and SIGKILL when the rest of the grace period (counted from preStop) runs out.
            stop_after = GRACE - int(PRE_STOP[1])
            signalled = time.monotonic()
            stop = ("podman", "stop", "--time", str(stop_after), container.name)
            with subprocess.Popen(stop, stdout=subprocess.DEVNULL) as stopping:
                wait_for_idle_workers_to_exit(container)
                request.sendall(head[len(head) // 2 :])
                response = http.client.HTTPResponse(request)
                response.begin()
                body = response.read().decode()
                assert stopping.wait(timeout=GRACE + COMMAND_TIMEOUT) == 0
            stopped_in = time.monotonic() - signalled
        state = container.state()
        print(
            f"stopped {stopped_in:.2f} s after SIGTERM (SIGKILL after {stop_after} s); exit status {state['ExitCode']}"
        )
        assert (response.status, body) == (200, "All good. You only get this message if you're authenticated")
        assert state["Status"] == "exited"
        assert state["ExitCode"] == 0, container.logs()
        assert not state["OOMKilled"]


def wait_for_idle_workers_to_exit(container: Container) -> None:
    """Waits until gunicorn handled SIGTERM and every worker but the one holding the request has exited."""
    idle = WORKERS - 1
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while time.monotonic() < deadline:
        logs = container.logs()
        if "Handling signal: term" in logs and logs.count("Worker exiting") >= idle:
            return
        time.sleep(0.1)
    pytest.fail(f"no graceful stop under way {COMMAND_TIMEOUT:.0f} s after podman stop:\n{container.logs()}")
