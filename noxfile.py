"""Every check of ka: ``nox -l`` lists the sessions, ``nox -s NAME`` runs one.

``.ci/run``, the GitHub workflows and a developer all run these sessions. Without nox installed,
``bash scripts/nox.sh ARGS`` makes ``.venv`` with the pinned nox and runs it. Tool pins are the
``[dependency-groups]`` of pyproject.toml; each session installs its group into its own venv under
``.nox/``, reused from run to run (``pip install .`` still rebuilds ka every time). The Debian
packages some checks need come from ``scripts/system-packages.sh`` (run as root), not from here.

Sessions tagged ``check`` are the ones ``.ci/run`` runs beside the test suite (``nox -t check``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "imports", "tests"]  # plain `nox`: the quick ones

LINT_PATHS = ["src", "tests", "tools", "benchmarks", "docs", "noxfile.py"]


def group(name: str) -> tuple[str, ...]:
    """The requirements of one of pyproject.toml's [dependency-groups]."""
    return nox.project.dependency_groups(PYPROJECT, name)


def extra(name: str) -> list[str]:
    """The requirements of one of ka's extras, without ka itself."""
    requirements: list[str] = PYPROJECT["project"]["optional-dependencies"][name]
    return requirements


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (docs examples included) on ka built from this tree; args go to pytest.

    Installs ka with its ``test`` extra and the ``peers`` dependency group (the libraries and
    servers the integration tests run against). KA_REQUIRE_EXTENSIONS=1 fails a run whose compiled
    core did not build or import. KA_TEST_PEERS=0 leaves the peers out where they have no wheels
    (free-threaded builds, PyPy): the tests that need one skip with a reason.
    """
    peers = os.environ.get("KA_TEST_PEERS", "1")
    if peers not in ("0", "1"):
        session.error(f"KA_TEST_PEERS={peers!r}: expected 1 (install the peers group) or 0 (leave it out)")
    # pip's own lines are the progress of the longest quiet step (ka's build, ~80 packages).
    what = " and the test peers (the peers group: ~80 packages, a minute on a first run)" * (peers == "1")
    session.log(f"installing ka (its compiled core built from this tree) with the test extra{what}")
    session.install(".[test]", *(group("peers") if peers == "1" else ()), "--progress-bar=off", silent=False)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(tags=["check"])
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict over src, tests, tools, benchmarks, docs and this file; the type
    completeness of ka's public names (pyright --verifytypes, 100% required).

    Configured in pyproject.toml; the test extra and the peers group are installed for their types.
    """
    session.install(*group("lint"), *extra("test"), *group("peers"))
    _same_ruff_as_pre_commit(session)
    session.run("ruff", "--version")
    session.run("ruff", "check", "--no-cache", *LINT_PATHS)
    session.log("mypy --strict (files and options from pyproject.toml)")
    session.run("mypy", "--no-incremental", f"--cache-dir={os.devnull}")
    # pyright reads an installed package (an editable install hides it) from the python on PATH:
    # the session's. Types from the peers without type information count as external.
    session.install(".", "--no-deps")
    session.run("pyright", "--verifytypes", "ka", "--ignoreexternal")


def _same_ruff_as_pre_commit(session: nox.Session) -> None:
    """The pre-commit hook's ruff is the lint group's ruff (two pins, one version)."""
    pinned = next(req.split("==")[1] for req in group("lint") if req.startswith("ruff=="))
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    found = re.search(r"ruff-pre-commit\s+rev:\s*v?([\w.]+)", config)
    if found is None or found.group(1) != pinned:
        session.error(
            f".pre-commit-config.yaml's ruff-pre-commit rev is not v{pinned} (the lint group's ruff)"
        )


@nox.session(venv_backend="none", tags=["check"])
def imports(session: nox.Session) -> None:
    """The import graph of src/ka: no cycle, no arrow upward (tools/check_imports.py)."""
    session.run(sys.executable, "tools/check_imports.py", *session.posargs, external=True)


@nox.session(tags=["check"])
def docs(session: nox.Session) -> None:
    """The documentation site with Sphinx, warnings as errors; args: the output directory.

    ka is installed (autodoc imports it). The HTML goes to the directory given as argument, else
    $DOCS_OUT, else .nox/docs/tmp/html. Then the built API reference is checked against every
    public module's __all__ (tools/check_api_reference.py).
    """
    session.install(*group("docs"), ".")
    out = (
        session.posargs[0]
        if session.posargs
        else os.environ.get("DOCS_OUT") or f"{session.create_tmp()}/html"
    )
    # -E: read every page afresh; -W --keep-going: report every warning, then fail on any.
    session.run("python", "-m", "sphinx", "-E", "-W", "--keep-going", "-b", "html", "docs", out)
    session.log(f"documentation built without warnings: {out}/index.html")
    # The reference as built: each documented module shows exactly its __all__.
    session.run("python", "tools/check_api_reference.py", out)


@nox.session(tags=["check"])
def platforms(session: nox.Session) -> None:
    """Every OS branch of the C shim, from Linux (tools/check_platforms.sh, about a minute).

    zig cross-compiles, the Cython output for macOS, the recording stand-in, the Windows branch
    under Wine.
    """
    session.install(*group("platforms"), *extra("test"))
    session.run("bash", "tools/check_platforms.sh", external=True)


@nox.session(tags=["check"])
def dist(session: nox.Session) -> None:
    """Packaging: the sdist, a wheel from it per CPython with the suite (tools/check_dist.sh).

    Also header compile checks, cibuildwheel's identifiers and the workflow schemas.
    KA_DIST_PYTHONS: pyenv versions to test, or "system".
    """
    session.install(*group("dist"))
    session.run("bash", "tools/check_dist.sh", external=True)


@nox.session(venv_backend="none", tags=["check"])
def sid(session: nox.Session) -> None:
    """CPython 3.14 and 3.15 from a Debian sid chroot: the wheel and the suite on each.

    tools/check_sid_pythons.sh (KA_SID_PYTHONS picks the versions). Needs root (debootstrap,
    chroot); without it the script says it skipped.
    """
    session.run("bash", "tools/check_sid_pythons.sh", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """The README's main job: ka bench against plain setsockopt calls; args go to ka bench."""
    session.install(".")
    session.run("python", "-m", "ka", "bench", *session.posargs)


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing (mutmut): a seeded sample of mutants per module; args go to tools/mutation.py.

    ``nox -s mutation -- ka.policy`` (a module, file or folder), ``-- --changed`` (this branch's
    files against main, also the default), ``--sample N``/``--all``, ``--seed S``. CPU-heavy and
    long: not part of ``check``. ka is installed editable so the compiled core sits in src/ka/,
    where mutmut copies it from; with the test peers, as ``tests`` has them (without them the
    tests that need one skip, and their functions' mutants go untested: the exporter's all).
    """
    session.install(*group("mutation"), *group("peers"), "-e", ".[test]")
    session.run("python", "tools/mutation.py", *session.posargs)


@nox.session
def wheels(session: nox.Session) -> None:
    """cibuildwheel, as the wheel workflow runs it; args go to cibuildwheel.

    e.g. ``nox -s wheels -- --output-dir wheelhouse dist/ka-0.1.0.tar.gz``.
    """
    session.install(*group("cibuildwheel"))
    session.run("cibuildwheel", *session.posargs)
