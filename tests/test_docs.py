"""The documentation stays true: its links resolve, every variable the service reads is documented, and the
own-resources example in docs/architecture.md runs as written."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import falcon.testing
import pytest

from service.settings import ConfigError, Settings
from tests.support.factories import AUDIENCE, ISSUER, SECRET, wall_clock_token

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")])
CONFIGURATION = ROOT / "docs" / "configuration.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
EXAMPLE_HEADING = "## Using the middleware on your own resources"

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


# --- links ----------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(markdown: str) -> list[str]:
    """Link targets outside code blocks and code spans, leaving out URLs with a scheme (https:, mailto:)."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    return [target for target in _LINK.findall(prose) if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked.read_text())):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def test_the_pages_are_there():
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    for name in ("configuration", "security", "dpop", "operations", "performance", "architecture"):
        assert f"docs/{name}.md" in names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_slugs_follow_githubs_rules():
    assert slug("Several replicas: Redis") == "several-replicas-redis"
    assert slug("What gunicorn.conf.py sets") == "what-gunicornconfpy-sets"
    assert slug("The proof's checks") == "the-proofs-checks"
    assert slug("`python -m service check` and its exit_codes") == "python--m-service-check-and-its-exit_codes"
    assert anchors("# A\n\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Some section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#some-section) [here](#page) [web](https://example.com/x.md) `[code](missing.md)`\n"
        "[gone](missing.md) [no anchor](other.md#another-section) [self](#nowhere)\n\n# Page\n"
    )
    assert [problem.split(":")[0] for problem in broken_links(page)] == [
        "missing.md",
        "other.md#another-section",
        "#nowhere",
    ]


# --- configuration.md documents every variable ------------------------------------------------------------


def _documented() -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)`", CONFIGURATION.read_text()))


# Environments Settings.from_env accepts, each turning on other branches: every key source, DPoP's Redis store
# with nonces, the host-local replay directory, metrics off and on with gunicorn's directory.
ENVIRONMENTS = {
    "jwks file": {"JWT_AUDIENCE": AUDIENCE, "JWT_JWKS_FILE": "/run/jwks.json"},
    "secret": {"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET},
    "auth0": {"JWT_AUDIENCE": AUDIENCE, "AUTH0_DOMAIN": "tenant.example.com"},
    "discovery": {"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER},
    "jwks url": {"JWT_AUDIENCE": AUDIENCE, "JWT_JWKS_URL": "https://issuer.example.com/jwks.json"},
    "dpop on redis": {
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_JWKS_FILE": "/run/jwks.json",
        "DPOP": "required",
        "DPOP_REPLAY_STORE": "redis://127.0.0.1:6379/0",
        "DPOP_NONCE_SECRET": "n" * 32,
        "METRICS": "0",
    },
    "host-local replay, gunicorn's metrics": {
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_SECRET": SECRET,
        "DPOP_REPLAY_DIR": "/run/jwt-api/replay",
        "PROMETHEUS_MULTIPROC_DIR": "/run/jwt-api/metrics",
    },
    "dpop off": {"JWT_AUDIENCE": AUDIENCE, "JWT_SECRET": SECRET, "DPOP": "off", "ACCESS_LOG": "0"},
}
PROBE = "x"  # a value no variable takes as its default


def _candidates() -> set[str]:
    """Every upper-case string literal in the service's code and gunicorn.conf.py: the names it could read."""
    sources = [*(ROOT / "service").rglob("*.py"), ROOT / "gunicorn.conf.py"]
    literal = re.compile(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)["']""")
    return {name for source in sources for name in literal.findall(source.read_text())}


def _outcome(environ: dict[str, str]) -> object:
    try:
        return Settings.from_env(environ)
    except ConfigError as error:
        return f"ConfigError: {error}"


def variables_settings_reads() -> set[str]:
    """The variables Settings.from_env reads, seen by what they do: a name counts when setting it changes the
    settings or the error it gives, in any of ENVIRONMENTS.

    Watching lookups instead (a mapping that records them) sees nothing here: `from_env` first copies the
    environment into a dict of stripped, non-empty values, and reads that copy.
    """
    read = set()
    candidates = _candidates()
    for environ in ENVIRONMENTS.values():
        baseline = _outcome(environ)
        assert isinstance(baseline, Settings), baseline
        read.update(environ)
        for name in candidates - set(environ):
            if _outcome({**environ, name: PROBE}) != baseline:
                read.add(name)
    return read


def gunicorn_conf_reads(source: str) -> set[str]:
    """The names gunicorn.conf.py looks up in os.environ (`os.environ[NAME]`, `.get`, `.setdefault`, `.pop`,
    `os.getenv`), a NAME being a string or a module-level constant holding one."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def name_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return constants.get(node.id) if isinstance(node, ast.Name) else None

    def is_environ(node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr == "environ"
        return isinstance(node, ast.Name) and node.id == "environ"

    names = set()
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            function = node.func
            if function.attr in ("get", "setdefault", "pop") and is_environ(function.value):
                key = node.args[0]
            elif function.attr == "getenv":
                key = node.args[0]
        if key is not None and (name := name_of(key)) is not None:
            names.add(name)
    return names


def test_settings_reads_are_found():
    read = variables_settings_reads()
    # The finder sees reads the environments above leave unset, of every kind of value.
    for name in ("JWT_LEEWAY", "LOG_FORMAT", "DPOP_REPLAY_STORE_PASSWORD", "JWT_REQUIRE_AT_JWT", "CORS_ALLOW_ORIGINS"):
        assert name in read
    assert "PATH" not in read and "HS256" not in read


def test_configuration_documents_every_variable_settings_reads():
    assert sorted(variables_settings_reads() - _documented()) == []


def test_configuration_documents_every_variable_gunicorn_conf_reads():
    assert sorted(gunicorn_conf_reads((ROOT / "gunicorn.conf.py").read_text()) - _documented()) == []


def test_gunicorn_conf_reads_are_found():
    source = (
        'import os\nDIR = "SOME_DIR"\nos.environ[DIR] = "x"\nos.environ.get("OTHER")\nos.getenv("THIRD")\n'
        'os.environ.setdefault("FOURTH", "1")\nvalue = {}.get("NOT_ENV")\n'
    )
    assert gunicorn_conf_reads(source) == {"SOME_DIR", "OTHER", "THIRD", "FOURTH"}


# --- the own-resources example ----------------------------------------------------------------------------


def example_code() -> str:
    """The ```python blocks of docs/architecture.md's own-resources section, joined."""
    section = ARCHITECTURE.read_text().split(EXAMPLE_HEADING + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert blocks, f"no python block under {EXAMPLE_HEADING!r}"
    return "\n".join(blocks)


@pytest.fixture
def example_app(monkeypatch) -> falcon.testing.TestClient:
    # The example reads os.environ: give it an HS256 configuration the token factories sign for, and nothing else.
    monkeypatch.setattr(os, "environ", {"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER, "JWT_SECRET": SECRET})
    namespace: dict = {"__name__": "messages"}
    exec(compile(example_code(), str(ARCHITECTURE), "exec"), namespace)  # noqa: S102 (our own documentation)
    return falcon.testing.TestClient(namespace["app"])


def test_the_example_refuses_a_request_without_a_token(example_app):
    result = example_app.simulate_get("/messages")
    assert result.status_code == 401
    assert result.headers["content-type"] == "application/json"
    assert result.json["code"] == "authorization_header_missing"
    assert result.headers["www-authenticate"].startswith('Bearer realm="api"')


def test_the_example_serves_a_valid_token(example_app):
    result = example_app.simulate_get("/messages", headers={"Authorization": f"Bearer {wall_clock_token()}"})
    assert result.status_code == 200
    assert result.json == {"for": "user-1"}


def test_the_example_responder_needs_its_scope(example_app):
    without = example_app.simulate_post("/messages", headers={"Authorization": f"Bearer {wall_clock_token()}"})
    assert without.status_code == 403
    assert without.json["code"] == "insufficient_scope"
    token = wall_clock_token(scope="write:messages")
    assert example_app.simulate_post("/messages", headers={"Authorization": f"Bearer {token}"}).status_code == 204
