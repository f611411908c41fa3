"""docs/api.md documents every public module, and in each exactly the names of its ``__all__``.

A module is public when the reference documents it; every other module of ka is listed below as
internal, with the reason. A new module fails here until it is put in one or the other. The
rendered site is checked the same way by ``nox -s docs`` (tools/check_api_reference.py reads the
built ``objects.inv``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

import ka

API = Path(__file__).resolve().parents[2] / "docs" / "api.md"

pytestmark = pytest.mark.skipif(not API.exists(), reason="no docs/ next to tests/ (an installed copy)")

# Modules that are not the public API, and why. Their public names are re-exported by a public
# module, or they belong to the `ka` command or the benchmark (documented as commands, not as API).
INTERNAL = {
    "ka.__main__": "python -m ka",
    "ka.policy": "re-exported by ka (KeepAlive, resolve_policy)",
    "ka.results": "re-exported by ka (BulkResult, ReadResult, Failure, KeepAliveSettings, BulkError)",
    "ka.system": "re-exported by ka (system_defaults, SystemDefaults)",
    "ka.facts": "re-exported by ka (capabilities, Capabilities)",
    "ka.bulk": "re-exported by ka (apply_many, read_many)",
    "ka.units": "the validation behind KeepAlive",
    "ka.protocol": "the types between the face and a core",
    "ka.errors": "the OSError each failure raises (documented on apply and BulkError)",
    "ka.syntax": "the policy-string parser behind KeepAlive.parse and resolve_policy",
    "ka.http.grammar": "re-exported by ka.http",
    "ka.http.persistence": "re-exported by ka.http",
    "ka.live.model": "re-exported by ka.live",
    "ka.live.procfs": "re-exported by ka.live",
    "ka.live.filters": "re-exported by ka.live",
    "ka.live.pidfd": "re-exported by ka.live",
    "ka.live.flows": "re-exported by ka.live",
    "ka.live.scanning": "re-exported by ka.live",
    "ka.live.sockdiag": "the netlink parsing behind ka.live.scan's sock_diag source (ka.live.SOURCES)",
    "ka.live.netns": "threads that enter another network namespace, for ka guard's sweep and coverage",
    "ka.probe.plan": "the search behind ka.probe.measure, no I/O (re-exported: Precision, first_wave, ...)",
    "ka.probe.lines": "the probe's sockets and TCP_INFO reads, driven by ka.probe.measure",
    "ka.probe.run": "re-exported by ka.probe (measure, Interrupted, ProbeError)",
    "ka.probe.result": "re-exported by ka.probe (ProbeResult)",
    "ka.probe.serve": "re-exported by ka.probe (listener, serve, HOLD)",
    "ka.audit.rules": "re-exported by ka.audit (Rule, AtLeastPolicy, MaxDetection, PathTimeout, ...)",
    "ka.audit.check": "re-exported by ka.audit (audit, judge, Report, Violation, ProcessSummary)",
    "ka.guard.attachment": "re-exported by ka.guard (Attachment and its states; attach/detach wrap it)",
    "ka.guard.sweeper": "re-exported by ka.guard (SweepReport, Reach, METHODS; sweep wraps it)",
    "ka.guard.coverage": "re-exported by ka.guard (uncovered_listeners, Listener, Unreadable)",
    "ka.guard.errors": "re-exported by ka.guard (GuardError and its kinds)",
    "ka.guard.pins": "the bpffs layout (BPFFS re-exported by ka.guard)",
    "ka.guard.programs": "the BPF programs and their records (Counters re-exported; docs/guard.md lists one)",
    "ka.guard.asm": "the eBPF assembler the programs are written with",
    "ka.guard.loader": "loading maps and programs, the verifier's log, descriptors owned",
    "ka.guard.btf": "the reader of the kernel's BTF, for the sweep's offsets",
    "ka.guard.syscall": "the bpf(2) system call through ctypes",
    "ka.guard.checks": "the kernel version and capability checks run before anything is loaded",
}
# Whole packages that are commands, not API: the `ka` command (docs/cli.md) and the benchmark
# (docs/performance/benchmarks.md).
INTERNAL_PACKAGES = ("ka.cli", "ka.bench")
_OPTIONS = re.compile(r"^\s+:([\w-]+):", re.MULTILINE)


def _directives(section: str | None = None) -> list[tuple[str, str, set[str]]]:
    """(directive, target, options) of every autodoc/py directive on the page, or in the section
    whose heading is ``## `section```."""
    text = API.read_text(encoding="utf-8")
    if section is not None:
        text = text.split(f"\n## `{section}`\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for match in re.finditer(r"^\.\. ([\w:]+):: (\S+)\n((?:[ \t]+:[\w-]+:.*\n)*)", text, re.MULTILINE):
        found.append((match[1], match[2], set(_OPTIONS.findall(match[3]))))
    return found


def _all_of(name: str) -> list[str] | None:
    """A module's ``__all__`` as its source writes it (without importing it: the libraries of
    ka.integrations need not be installed)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and "__all__" in [getattr(t, "id", None) for t in node.targets]:
            return list(ast.literal_eval(node.value))
    return None


def _modules() -> list[str]:
    names = ["ka"]
    for info in pkgutil.walk_packages(ka.__path__, "ka."):
        names.append(info.name)
    return names


def _is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split(".")[1:])


def test_every_module_is_public_or_internal_with_a_reason() -> None:
    documented = {target for directive, target, _ in _directives() if directive in ("automodule", "module")}
    undecided = [
        name
        for name in _modules()
        if name not in documented
        and name not in INTERNAL
        and not _is_private(name)
        and not name.startswith(tuple(p + "." for p in INTERNAL_PACKAGES) + INTERNAL_PACKAGES)
    ]
    assert not undecided, (
        f"modules neither in docs/api.md nor internal: {undecided}; document them (automodule with "
        ":members: and :undoc-members:, and an __all__) or list them in INTERNAL with the reason"
    )
    assert not [m for m in documented if _is_private(m) or m in INTERNAL], "a private module is documented"
    expected = {"ka.integrations." + n for n in ("aiohttp", "anyio", "asyncpg", "asyncssh", "gunicorn")}
    assert expected | {"ka.listen", "ka.live.cgroup", "ka.integrations.websockets"} <= documented
    rooms = {"ka.targets", "ka.bridge", "ka.probe", "ka.guard", "ka.audit"}
    assert rooms | {"ka.audit.report", "ka.audit.metrics"} <= documented


def test_each_documented_module_shows_exactly_its_all() -> None:
    """automodule with :members: documents a module's __all__ (imported names included) and,
    with :undoc-members:, the names without a docstring too; nothing else may widen it."""
    modules = [(target, options) for directive, target, options in _directives() if directive == "automodule"]
    # ka.server, aio, listen, http, the 21 integrations modules, live, cgroup, targets, bridge, probe,
    # audit and its report and metrics, guard
    assert len(modules) >= 33
    for name, options in modules:
        names = _all_of(name)
        assert names is not None, f"{name} has no __all__: its public names are not decided"
        assert {"members", "undoc-members"} <= options, f"{name}: needs :members: and :undoc-members:"
        widening = options & {"private-members", "imported-members", "ignore-module-all", "special-members"}
        assert not widening and "exclude-members" not in options, f"{name}: {options}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if (missing.name or "ka").split(".")[0] == "ka":
                raise
            continue  # its library is not installed here: __all__ as written was checked above
        assert all(hasattr(module, n) for n in names), f"{name}.__all__ names a missing attribute"


def test_single_entries_name_public_names_only() -> None:
    """An autoclass/autofunction/data entry documents a name of a documented module's __all__ (or
    a member of one): not an object of an internal module (the reference showed
    ka.policy.PathMeasurement, a module that is not public)."""
    directives = _directives()
    modules = {target for directive, target, _ in directives if directive in ("automodule", "module")}
    wrong = []
    for directive, target, _ in directives:
        if directive in ("automodule", "module", "autosummary"):
            continue
        name = target if "." in target else f"{_current_module(target)}.{target}"
        owner = max((m for m in modules if name.startswith(m + ".")), key=len, default=None)
        public = None if owner is None else (_all_of(owner) or [])
        if owner is None or public is None or name[len(owner) + 1 :].split(".")[0] not in public:
            wrong.append(f"{directive}:: {target}")
    assert not wrong, f"entries that are not public names of a documented module: {wrong}"


def _current_module(name: str) -> str:
    """The module a bare ``.. data:: NAME`` on the page belongs to: the last ``automodule`` or
    ``module`` directive above it."""
    text = API.read_text(encoding="utf-8")
    at = re.search(rf"^\.\. [\w:]+:: {re.escape(name)}$", text, re.MULTILINE)
    assert at is not None, name
    above: list[str] = re.findall(r"^\.\. (?:automodule|module):: (\S+)$", text[: at.start()], re.MULTILINE)
    return above[-1]


def test_the_face_shows_exactly_kas_all() -> None:
    shown = {
        target.removeprefix("ka.")
        for directive, target, _ in _directives("ka")
        if directive in ("autoclass", "autofunction", "autodata", "data")
    }
    assert shown == set(ka.__all__)


def test_private_machinery_is_not_public() -> None:
    """Issue 23: the reference documented ka.live.parse_tcp_line, pidfd_open and ka.units."""
    import ka.live

    assert not {"parse_tcp_line", "pidfd_open", "pidfd_getfd", "tcp_table"} & set(ka.live.__all__)
    from ka.live import procfs

    assert callable(procfs.parse_tcp_line)  # still there, in its module
    assert "ka.units" not in {target for directive, target, _ in _directives() if directive == "automodule"}
