"""pyproject.toml, the workflows and nox tell one story: the support policy, the extras, the test peers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"

pytestmark = pytest.mark.skipif(
    not PYPROJECT.exists() or not (ROOT / "noxfile.py").exists(),
    reason="pyproject.toml and noxfile.py are not next to the tests (an installed copy)",
)

# Not a library family: the wheel tests' own needs and the benchmark's plots.
NOT_FAMILIES = {"test", "bench"}


def _config() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    """The distribution name of a requirement, normalized (PEP 503), without extras or markers."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert found, requirement
    return re.sub(r"[-_.]+", "-", found[1]).lower()


def _specifier(requirement: str) -> str:
    """The version part of a requirement (">=4.1"), without extras or markers."""
    return re.sub(r"^[A-Za-z0-9._-]+(\[[^\]]*\])?", "", requirement.split(";")[0]).strip()


def test_each_family_extra_is_its_library_alone() -> None:
    """Issue 23: `ka[integrations]` pulled 80 packages (the test peers); an extra now installs one
    library family, and only that library."""
    extras = _config()["project"]["optional-dependencies"]
    families = {name: reqs for name, reqs in extras.items() if name not in NOT_FAMILIES}
    assert "integrations" not in extras
    assert {"gunicorn", "uvicorn", "hypercorn", "redis", "httpx", "prometheus", "psycopg"} <= set(families)
    for name, requirements in families.items():
        assert len(requirements) == 1, f"ka[{name}] installs {requirements}: one library per family"
        assert "[" not in requirements[0], f"ka[{name}] pulls the library's own extras: {requirements[0]}"


def test_the_peers_group_holds_every_family_at_the_same_bound() -> None:
    """The tests run each family's glue against its library, at least at the extra's version."""
    config = _config()
    peers = {_name(r): _specifier(r) for r in config["dependency-groups"]["peers"]}
    for name, requirements in config["project"]["optional-dependencies"].items():
        if name in NOT_FAMILIES:
            continue
        library = _name(requirements[0])
        assert library in peers, f"the peers group lacks {library} (ka[{name}])"
        assert peers[library] == _specifier(requirements[0]), (name, peers[library], requirements[0])


def test_the_test_extra_has_wheels_everywhere() -> None:
    """Defect 10: `test` holds only what has win_arm64 wheels for every CPython (cibuildwheel's
    test-extras); numpy and the libraries are in the peers group."""
    config = _config()
    names = {_name(r) for r in config["project"]["optional-dependencies"]["test"]}
    assert names == {"pytest", "hypothesis"}
    assert config["tool"]["cibuildwheel"]["test-extras"] == ["test"]
    assert "numpy" in {_name(r) for r in config["dependency-groups"]["peers"]}


def test_nox_tests_installs_the_test_extra_and_the_peers() -> None:
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert '"KA_TEST_PEERS", "1"' in noxfile  # the peers by default
    assert 'session.install(".[test]", *(group("peers") if peers == "1" else ()),' in noxfile


def _policy_versions() -> tuple[list[str], list[str]]:
    """(CPython versions, free-threaded ones) of cibuildwheel's build list, as "3.11" strings."""
    build = _config()["tool"]["cibuildwheel"]["build"].split()
    versions = [f"3.{m[1]}" for b in build if (m := re.fullmatch(r"cp3(\d+)-\*", b))]
    threaded = [f"3.{m[1]}t" for b in build if (m := re.fullmatch(r"cp3(\d+)t-\*", b))]
    assert len(versions) + len(threaded) == len(build), build
    return versions, threaded


def test_one_support_policy_everywhere() -> None:
    """requires-python, the classifiers, the wheels and the CI matrix name the same CPythons."""
    config = _config()
    versions, threaded = _policy_versions()
    assert versions == [f"3.{n}" for n in range(11, 16)], versions  # not end of life on 2026-12-05
    assert threaded == ["3.14t", "3.15t"]
    assert config["project"]["requires-python"] == f">={versions[0]}"
    classifiers = config["project"]["classifiers"]
    version = re.compile(r"Programming Language :: Python :: (3\.\d+)")
    named = [m[1] for c in classifiers if (m := version.fullmatch(c))]
    assert named == versions
    assert any(c.startswith("Programming Language :: Python :: Free Threading ::") for c in classifiers)
    assert config["tool"]["mypy"]["python_version"] == versions[0]


@pytest.mark.skipif(not (ROOT / ".github").is_dir(), reason="no .github/ next to the tests (an sdist)")
def test_the_ci_matrix_follows_the_policy() -> None:
    versions, threaded = _policy_versions()
    workflow = (ROOT / ".github" / "workflows" / "tests.yml").read_text(encoding="utf-8")
    matrix = re.search(r"^\s+python: \[(.*)\]$", workflow, re.MULTILINE)
    assert matrix, "no python matrix in tests.yml"
    assert [v.strip().strip('"') for v in matrix[1].split(",")] == versions + threaded


def test_project_urls_and_license() -> None:
    project = _config()["project"]
    assert set(project["urls"]) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in project["urls"].values())
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
