"""deploy/kubernetes: the manifests parse, agree with each other and with the service they run.

Ports, probe paths, environment variable names and the shutdown timing are checked against the service's
own code (service.settings, the app's routes, gunicorn.conf.py), so a change on either side fails here. Every
Kubernetes object is also validated, strictly, against the published OpenAPI schemas that kubernetes-validate
carries: those of the oldest release kustomization.yaml claims and of the newest one the package has.
tests/integration/test_image.py runs the image the way deployment.yaml does.
"""

from __future__ import annotations

import math
import re

import falcon.testing
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from service.app import create_app
from service.settings import DEFAULT_PORT, ConfigError, Settings
from tests.support import ROOT
from tests.support.factories import hs_settings
from tests.support.kubernetes import EXAMPLE_SECRET, MANIFESTS, cpus, env_values, load

KUSTOMIZATION = "kustomization.yaml"  # kustomize's own kind: no Kubernetes schema has it


@pytest.fixture(scope="module")
def deployment() -> dict:
    return load("deployment.yaml")


@pytest.fixture(scope="module")
def pod(deployment) -> dict:
    return deployment["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (container,) = pod["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(hs_settings()))


def settings_variables() -> set[str]:
    """Every quoted upper-case name in service/settings.py: the environment variables it can read."""
    return set(re.findall(r'"([A-Z][A-Z0-9_]*)"', (ROOT / "service" / "settings.py").read_text()))


def gunicorn_graceful_timeout() -> int:
    """graceful_timeout from gunicorn.conf.py, read from its text (importing it runs the start-up check)."""
    match = re.search(r"^graceful_timeout\s*=\s*(\d+)\s*$", (ROOT / "gunicorn.conf.py").read_text(), re.M)
    assert match, "gunicorn.conf.py sets no graceful_timeout"
    return int(match.group(1))


def oldest_supported_kubernetes() -> str:
    """The oldest Kubernetes release (major.minor) the manifests claim to support, from kustomization.yaml."""
    match = re.search(r"Kubernetes (\d+\.\d+) or newer", (MANIFESTS / KUSTOMIZATION).read_text())
    assert match, f"{KUSTOMIZATION} names no oldest supported Kubernetes release"
    return match.group(1)


SCHEMA_VERSIONS = (oldest_supported_kubernetes(), kubernetes_validate.major_minor(kubernetes_validate.latest_version()))
KUBERNETES_OBJECTS = sorted(path.name for path in MANIFESTS.glob("*.yaml") if path.name != KUSTOMIZATION)


def test_every_manifest_is_one_kubernetes_object_named_jwt_api():
    for path in sorted(MANIFESTS.glob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text()))
        assert len(documents) == 1, path.name
        (document,) = documents
        assert document["apiVersion"] and document["kind"], path.name
        if document["kind"] != "Kustomization":
            assert document["metadata"]["name"] in ("jwt-api", "jwt-api-auth"), path.name


def test_kustomization_applies_every_manifest_except_the_example_secret():
    listed = set(load("kustomization.yaml")["resources"])
    shipped = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", EXAMPLE_SECRET}
    assert listed == shipped


def test_container_port_is_the_service_default_port_named_http(container):
    assert container["ports"] == [{"name": "http", "containerPort": DEFAULT_PORT}]


def test_service_sends_port_80_to_the_named_container_port(container):
    spec = load("service.yaml")["spec"]
    assert spec["type"] == "ClusterIP"
    (port,) = spec["ports"]
    assert port["port"] == 80
    assert port["targetPort"] == container["ports"][0]["name"]


def test_deployment_service_and_pdb_select_the_pod_labels(deployment, pod):
    labels = pod["metadata"]["labels"]
    selectors = {
        "deployment": deployment["spec"]["selector"]["matchLabels"],
        "service": load("service.yaml")["spec"]["selector"],
        "pdb": load("pdb.yaml")["spec"]["selector"]["matchLabels"],
    }
    for owner, selector in selectors.items():
        assert selector, owner
        assert selector.items() <= labels.items(), owner


def test_hpa_scales_the_deployment_on_cpu_utilization(deployment):
    spec = load("hpa.yaml")["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "jwt-api"}
    assert deployment["metadata"]["name"] == spec["scaleTargetRef"]["name"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def test_pdb_lets_a_drain_evict_a_pod_while_one_serves():
    minimum = load("hpa.yaml")["spec"]["minReplicas"]
    budget = load("pdb.yaml")["spec"]
    allowed = budget["maxUnavailable"] if "maxUnavailable" in budget else minimum - budget["minAvailable"]
    assert 1 <= allowed < minimum


def test_probes_call_routes_the_app_answers_with_200(container, client):
    paths = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in paths.items():
        check = container[probe]["httpGet"]
        assert (check["path"], check["port"]) == (path, "http"), probe
        response = client.simulate_get(path)
        assert response.status_code == 200, probe


def test_deployment_sets_only_variables_the_settings_read(container):
    names = [variable["name"] for variable in container["env"]]
    assert len(names) == len(set(names))
    assert set(names) <= settings_variables()


def test_deployment_and_example_secret_make_a_valid_configuration(container):
    with pytest.raises(ConfigError, match="JWT_AUDIENCE"):
        Settings.from_env({})  # the required variable, which the Deployment must provide
    environ = env_values(container)
    assert "JWT_AUDIENCE" in environ
    settings = Settings.from_env(environ)
    assert settings.port == container["ports"][0]["containerPort"]
    assert settings.workers == math.ceil(cpus(container["resources"]["limits"]["cpu"]))


def test_web_concurrency_is_the_cpu_limit(container):
    (variable,) = [variable for variable in container["env"] if variable["name"] == "WEB_CONCURRENCY"]
    ref = variable["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu"
    assert cpus(ref["divisor"]) == 1
    assert ref.get("containerName", container["name"]) == container["name"]


def test_cpu_and_memory_have_requests_within_limits(container):
    resources = container["resources"]
    for resource in ("cpu", "memory"):
        assert resources["requests"][resource] and resources["limits"][resource], resource
    assert cpus(resources["requests"]["cpu"]) <= cpus(resources["limits"]["cpu"])


def test_grace_period_outlasts_pre_stop_sleep_plus_gunicorn_graceful_timeout(pod, container):
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert pre_stop >= 1  # long enough for endpoints to drop the pod before SIGTERM
    assert pod["spec"]["terminationGracePeriodSeconds"] > pre_stop + gunicorn_graceful_timeout()


def test_pod_runs_as_non_root_on_a_read_only_root_with_a_writable_tmp(pod, container):
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["spec"]["securityContext"]["runAsUser"], int)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # gunicorn creates its worker heartbeat files in the temporary directory.
    (mount,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]  # noqa: S108
    (volume,) = [volume for volume in pod["spec"]["volumes"] if volume["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_prometheus_annotations_name_the_container_port_and_a_served_path(pod, container, client):
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    assert annotations["prometheus.io/scrape"] in ("true", "false")
    if annotations["prometheus.io/scrape"] == "true":
        assert client.simulate_get(annotations["prometheus.io/path"]).status_code == 200


def test_example_secret_holds_placeholders_only():
    secret = load(EXAMPLE_SECRET)
    assert secret["kind"] == "Secret"
    assert "EXAMPLE" in (MANIFESTS / EXAMPLE_SECRET).read_text().splitlines()[0]
    assert set(secret["stringData"]) == {"AUTH0_DOMAIN", "JWT_AUDIENCE"}
    assert all("your-" in value or "example" in value for value in secret["stringData"].values())


def test_the_dpop_replay_store_and_nonce_secret_come_from_the_secret_when_it_has_them(container):
    refs = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    for name in ("DPOP_REPLAY_STORE", "DPOP_NONCE_SECRET"):
        assert refs[name] == {"name": "jwt-api-auth", "key": name, "optional": True}
    environ = {
        **env_values(container),
        "DPOP_REPLAY_STORE": "rediss://:example-password@redis.example.internal:6380/0",
        "DPOP_NONCE_SECRET": "example-nonce-secret-of-at-least-32-bytes",
    }
    settings = Settings.from_env(environ)
    assert settings.dpop_replay_store.startswith("rediss://")
    assert settings.dpop_nonce_secret is not None


def test_oldest_supported_kubernetes_is_a_release_kubernetes_validate_has_schemas_for():
    # validate() quietly falls back to an older release's schemas, so the claimed one must really be there.
    carried = {kubernetes_validate.major_minor(version) for version in kubernetes_validate.all_versions()}
    assert SCHEMA_VERSIONS[0] in carried, sorted(carried)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("name", KUBERNETES_OBJECTS)
def test_manifest_is_valid_in_strict_mode_against_the_kubernetes_schemas(name, version):
    # Strict: a property the schema does not define (a misspelled field, one from a newer release) is an error,
    # where kubectl would drop it with at most a warning.
    try:
        validated = kubernetes_validate.validate(load(name), version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{name}, Kubernetes {version}: {'.'.join(map(str, error.path))}: {error.message}")
    assert validated == version  # these schemas, not an older release's


def test_only_the_kustomization_has_no_kubernetes_schema():
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(load(KUSTOMIZATION), SCHEMA_VERSIONS[-1], strict=True)
    assert {path.name for path in MANIFESTS.glob("*.yaml")} - set(KUBERNETES_OBJECTS) == {KUSTOMIZATION}


def test_strict_schema_validation_refuses_a_misspelled_field():
    misspelled = load("deployment.yaml")
    (api,) = misspelled["spec"]["template"]["spec"]["containers"]
    api["readinesProbe"] = api.pop("readinessProbe")
    kubernetes_validate.validate(misspelled, SCHEMA_VERSIONS[-1], strict=False)  # lax schemas let it through
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(misspelled, SCHEMA_VERSIONS[-1], strict=True)
