"""`make lint`'s import check (lint-imports, the contract in pyproject.toml): it holds on service/ as it is, and
it fails, naming the import, on a copy where a lower layer imports a higher one or a module has no layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of service/ and pyproject.toml, to break."""
    shutil.copytree(ROOT / "service", tmp_path / "service", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_contract_holds_on_service_as_it_is(tree):
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "imported"),
    [
        ("errors", "service.app"),  # the bottom layer importing the wiring
        ("keys.keyset", "service.tokens.jws"),  # keys sit below tokens
        ("auth.cors", "service.ops.metrics"),  # auth and ops sit side by side
        ("tokens.claims", "service.auth.middleware"),
        ("settings", "service.keys.fetch"),
    ],
)
def test_an_upward_import_breaks_the_contract_and_is_named(tree, module, imported):
    path = tree / "service" / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\nimport {imported}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode == 1
    assert f"- service.{module} -> {imported} (l." in result.stdout, result.stdout


def test_a_module_given_no_layer_breaks_the_contract(tree):
    (tree / "service" / "helpers.py").write_text('"""A module nobody placed."""\n')
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "service.helpers" in result.stdout, result.stdout
