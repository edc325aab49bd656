"""Reading deploy/kubernetes: its manifests, and the environment a pod of deployment.yaml would see.

Shared by the checks of the manifests themselves and by the test that runs the image the way they do.
"""

from __future__ import annotations

import math

import yaml

from tests.support import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
EXAMPLE_SECRET = "secret.example.yaml"


def load(name: str) -> dict:
    """The manifest deploy/kubernetes/`name`, parsed."""
    return yaml.safe_load((MANIFESTS / name).read_text())


def cpus(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("2", "500m", 1.5) in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def env_values(container: dict) -> dict[str, str]:
    """The container's environment as the pod would see it, with secretKeyRefs read from the example Secret
    and resourceFieldRefs resolved from the container's resources (rounded up, as the kubelet does)."""
    secret = load(EXAMPLE_SECRET)
    values = {}
    for variable in container["env"]:
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            if ref.get("optional") and ref["key"] not in secret["stringData"]:
                continue  # an optional key the example leaves out: the pod runs without the variable
            values[variable["name"]] = secret["stringData"][ref["key"]]
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            kind, resource = ref["resource"].split(".")
            amount = cpus(container["resources"][kind][resource]) / cpus(ref.get("divisor", 1))
            values[variable["name"]] = str(math.ceil(amount))
        else:
            values[variable["name"]] = variable["value"]
    return values
