"""The import graph of ka: no cycle, no arrow from a lower layer to a higher one, and no private
name taken from another module.

Usage: ``python tools/check_imports.py [PACKAGE_DIR]`` (default: ``src/ka`` beside this script's
folder); ``nox -s imports`` runs it. Exit status 0 when the graph is clean, 1 with every cycle and
every upward arrow listed, 2 for a module the layer table does not place.

What counts as an arrow: every ``import`` and ``from ... import`` in a module, at any depth
(function-level imports too: they run when the function is first called, and a late import is
how a cycle hides), relative ones resolved against the module's package. ``from pkg import name``
is an arrow to ``pkg.name`` when that is a module of the tree, else to ``pkg``. Importing
``ka.a.b`` is an arrow to ``ka.a.b`` only, not to its parent packages (every module would
otherwise depend on ``ka/__init__``, which imports them). Imports of other distributions are
not arrows. Imports under ``if TYPE_CHECKING:`` never run, but they are arrows of the design
(``errors`` naming ``results``' types while ``results`` raises ``errors``' exception is a circle
of meaning), so they count, marked as such; ``--runtime-only`` leaves them out.
``importlib.import_module`` calls are not read (ka uses them only for other distributions). Cython modules
(``.pyx``) are read line by line for ``import``/``from ... import``; ``cimport`` is C-level and
not an arrow. Type stubs (``.pyi``) are not read.

Layers are declared in LAYERS below, lowest first. A name stands for a module or a whole package
(``ka.live`` covers ``ka/live.py`` and every module of a ``ka/live/`` package); the most specific
entry wins. Patterns use fnmatch (``ka._*``: private top-level helper modules). To place a new
module, add its name to the list of its layer.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

# Lowest layer first. An arrow may point to the same layer or a lower one.
LAYERS: dict[str, list[str]] = {
    # no I/O, no ka class: units, the core protocol's types, messages, the platform table
    "leaf": [
        "ka.units",
        "ka.protocol",
        "ka.targets",
        "ka.errors",
        "ka.syntax",
        "ka._options",
        "ka._durations",
        "ka._signals",
        "ka._gc",
        "ka._borrow",
    ],
    # the policy and the results, the system defaults
    "model": ["ka.policy", "ka.results", "ka.system"],
    # the two implementations of the core protocol, and the choice between them
    "core": ["ka._ka_c", "ka._ka_py", "ka._impl"],
    # the public face: names (ka/__init__), the bulk calls, capabilities()
    "face": ["ka", "ka.bulk", "ka.bridge", "ka.facts"],
    "upper": [
        "ka.__main__",
        "ka.server",
        "ka.aio",
        "ka.listen",
        "ka.live",
        "ka.audit",
        "ka.guard",
        "ka.cli",
        "ka.http",
        "ka.bench",
        "ka.integrations",
        "ka.probe",
    ],
}

DEFAULT_PACKAGE = Path(__file__).resolve().parent.parent / "src" / "ka"
PYX_IMPORT = re.compile(r"^\s*(?:from\s+(\.*[\w.]*)\s+import\s+([^#]+)|import\s+([^#]+))")

Edge = tuple[str, str, int, bool]  # importer, imported, line, under TYPE_CHECKING only


def discover(package: Path) -> dict[str, Path]:
    """Module name -> source file for every .py and .pyx under the package directory."""
    modules: dict[str, Path] = {}
    root = package.parent
    for path in sorted(package.rglob("*")):
        if path.suffix not in (".py", ".pyx") or "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of the tree, and whether it sits in an ``if TYPE_CHECKING:`` body."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, typing_only = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, typing_only
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend((child, True) for child in node.body)
            stack.extend((child, typing_only) for child in node.orelse)
            continue
        stack.extend((child, typing_only) for child in ast.iter_child_nodes(node))


def _raw_imports(path: Path) -> Iterator[tuple[str | None, int, list[str], int, bool]]:
    """(module, level, imported names, line, under TYPE_CHECKING) for each import statement."""
    source = path.read_text(encoding="utf-8")
    if path.suffix == ".pyx":
        yield from _pyx_imports(source)
        return
    tree = ast.parse(source, filename=str(path))
    for node, typing_only in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0, [], node.lineno, typing_only
        else:
            yield node.module, node.level, [alias.name for alias in node.names], node.lineno, typing_only


def _pyx_imports(source: str) -> Iterator[tuple[str | None, int, list[str], int, bool]]:
    """The Python-level imports of a Cython module, line by line (``cimport`` lines skipped)."""
    lines = source.splitlines()
    number = 0
    while number < len(lines):
        start = number
        statement = lines[number].split("#")[0]
        number += 1
        # a parenthesised or backslash-continued name list
        while number < len(lines) and (
            statement.rstrip().endswith("\\") or statement.count("(") > statement.count(")")
        ):
            statement = statement.rstrip().rstrip("\\") + " " + lines[number].split("#")[0]
            number += 1
        match = PYX_IMPORT.match(statement)
        if match is None or re.search(r"\bcimport\b", statement):
            continue
        if match.group(3) is not None:
            for alias in match.group(3).split(","):
                yield alias.split()[0], 0, [], start + 1, False
        else:
            dotted = match.group(1)
            level = len(dotted) - len(dotted.lstrip("."))
            names = [
                alias.split()[0]
                for alias in match.group(2).replace("(", " ").replace(")", " ").split(",")
                if alias.strip()
            ]
            yield dotted[level:] or None, level, names, start + 1, False


def imports_of(name: str, path: Path, modules: dict[str, Path], runtime_only: bool = False) -> list[Edge]:
    """The arrows from one module to other modules of the tree."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    edges: list[Edge] = []
    for module, level, names, line, typing_only in _raw_imports(path):
        if typing_only and runtime_only:
            continue
        if level:
            base = package.split(".")
            if level > 1:
                base = base[: len(base) - (level - 1)]
            target = ".".join([*base, module] if module else base)
        else:
            target = module or ""
        submodules = [f"{target}.{imported}" for imported in names if f"{target}.{imported}" in modules]
        edges.extend((name, submodule, line, typing_only) for submodule in submodules)
        if not names or len(submodules) < len(names):  # `import x.y`, or a name defined in the module
            # the innermost module of the tree that the dotted name lies in
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts:
                edges.append((name, ".".join(parts), line, typing_only))
    return [edge for edge in edges if edge[0] != edge[1]]


def layer_of(module: str) -> str | None:
    """The layer of a module: the most specific entry of LAYERS naming it or a package above it.

    The top-level package's own entry (``ka``) places ``ka/__init__`` only: a module of ka that
    no other entry names is reported, not silently placed with the face.
    """
    best: tuple[int, int, str] | None = None  # (length of the name matched, exact over pattern, layer)
    for layer, names in LAYERS.items():
        for entry in names:
            for candidate in _self_and_parents(module):
                exact = entry == candidate
                if exact or ("*" in entry and fnmatch.fnmatchcase(candidate, entry)):
                    rank = (len(candidate), int(exact), layer)
                    if best is None or rank[:2] > best[:2]:
                        best = rank
    return None if best is None else best[2]


def _self_and_parents(module: str) -> Iterator[str]:
    """The module and the packages above it, the top-level package excepted."""
    parts = module.split(".")
    yield module
    while len(parts) > 2:
        parts.pop()
        yield ".".join(parts)


def cycles(edges: Iterable[Edge]) -> list[tuple[list[str], list[str]]]:
    """(one cycle, its strongly connected component) per component of more than one module."""
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    # Tarjan's algorithm, iterative.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return [(_cycle_in(component, graph), component) for component in sorted(components)]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while (before := previous[path[-1]]) is not None:
                    path.append(before)
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start} in {component}")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_reads(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, what) for each private name this module takes from another module of the tree:
    ``from .policy import _helper``, or ``policy._helper`` on a module it imported. A private
    *module* (``from . import _impl``) is the package's own business and not reported; a public
    name read from it (``_impl.core``) neither."""
    if path.suffix != ".py":
        return []  # the .pyx imports are checked by their names (PYX_IMPORT) in imports_of
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bound: dict[str, str] = {}  # local name -> module of the tree it is bound to
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            if target not in modules:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in modules:
                    bound[alias.asname or alias.name] = full
                elif _is_private(alias.name) and target != name:
                    found.append((node.lineno, f"imports {alias.name} from {target}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    bound[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _is_private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and f"{bound[node.value.id]}.{node.attr}" not in modules
        ):
            found.append((node.lineno, f"reads {node.value.id}.{node.attr} of {bound[node.value.id]}"))
    return found


def _where(edge: Edge, modules: dict[str, Path], package: Path) -> str:
    source, _, line, typing_only = edge
    place = f"{modules[source].relative_to(package.parent)}:{line}"
    return place + (", under TYPE_CHECKING" if typing_only else "")


def check(package: Path, runtime_only: bool = False) -> int:
    """Print every cycle and upward arrow of the package's import graph; the exit status."""
    modules = discover(package)
    unplaced = [name for name in modules if layer_of(name) is None]
    if unplaced:
        for name in unplaced:
            print(f"{name}: in no layer; add it to LAYERS in {Path(__file__).name}")
        return 2
    edges = sorted(
        {edge for name, path in modules.items() for edge in imports_of(name, path, modules, runtime_only)}
    )
    first: dict[tuple[str, str], Edge] = {}
    for edge in edges:
        first.setdefault(edge[:2], edge)
    order = list(LAYERS)
    problems = 0
    for cycle, component in cycles(edges):
        problems += 1
        print("cycle: " + " -> ".join(cycle))
        for source, target in zip(cycle, cycle[1:]):
            print(f"  {source} -> {target}  [{_where(first[source, target], modules, package)}]")
        if len(component) > len(cycle) - 1:
            print("  one of the cycles among " + ", ".join(component))
    for edge in edges:
        source, target = edge[:2]
        low, high = layer_of(source), layer_of(target)
        assert low is not None and high is not None
        if order.index(low) < order.index(high):
            problems += 1
            print(f"upward: {source} ({low}) -> {target} ({high})  [{_where(edge, modules, package)}]")
    for name, path in modules.items():
        for line, what in private_reads(name, path, modules):
            problems += 1
            print(f"private: {path.relative_to(package.parent)}:{line} {what}")
    arrows = len(first)
    if problems:
        print(
            f"{problems} problem(s) in the import graph of {package}: {len(modules)} modules, {arrows} arrows"
        )
        return 1
    print(
        f"import graph of {package}: {len(modules)} modules, {arrows} arrows, no cycle, none upward, "
        "no private name across modules"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("package", nargs="?", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--runtime-only", action="store_true", help="leave out imports under TYPE_CHECKING")
    args = parser.parse_args(argv)
    return check(args.package, args.runtime_only)


if __name__ == "__main__":
    sys.exit(main())
