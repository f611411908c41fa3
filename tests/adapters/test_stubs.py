"""The compiled core's stub (_ka_c.pyi) names and types exactly what the twin and the core define."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

import ka
from ka import _ka_py
from ka._impl import env_flag

STUB = Path(ka.__file__).parent / "_ka_c.pyi"


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def _own_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """Public names a module body defines itself (functions, classes, assignments), not imports."""
    names: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
    return {name: node for name, node in names.items() if not name.startswith("_")}


def _signature(node: ast.FunctionDef) -> tuple[list[tuple[str, str]], str]:
    """Parameters as (name, annotation) and the return annotation, as source text."""
    args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
    params = [(a.arg, ast.unparse(a.annotation) if a.annotation else "") for a in args]
    return params, ast.unparse(node.returns) if node.returns else ""


def test_stub_matches_the_twin() -> None:
    stub = _own_names(_stub())
    twin = _own_names(ast.parse(inspect.getsource(_ka_py)))
    assert sorted(stub) == sorted(twin)
    for name, node in stub.items():
        if isinstance(node, ast.FunctionDef):
            twin_node = twin[name]
            assert isinstance(twin_node, ast.FunctionDef), name
            assert _signature(node) == _signature(twin_node), name
        else:
            assert not isinstance(twin[name], ast.FunctionDef), name
            assert isinstance(node, ast.AnnAssign), name
            # constants: the stub's type describes the twin's value
            kind = ast.unparse(node.annotation).split("[")[0]
            assert type(getattr(_ka_py, name)).__name__ == kind, name


def _runtime_names(module: ModuleType) -> set[str]:
    """Public names the compiled module defines: its own functions and its constants."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if callable(value) and getattr(value, "__module__", None) != module.__name__:
            continue  # imported, e.g. option_error from ka.errors
        names.add(name)
    return names


@pytest.mark.skipif(env_flag("KA_NO_EXTENSIONS"), reason="KA_NO_EXTENSIONS: no compiled core")
def test_stub_matches_the_compiled_core() -> None:
    compiled = importlib.import_module("ka._ka_c")
    stub = _own_names(_stub())
    assert sorted(stub) == sorted(_runtime_names(compiled))
    for name, node in stub.items():
        value = getattr(compiled, name)
        if isinstance(node, ast.FunctionDef):
            runtime = [(p.name, p.kind) for p in inspect.signature(value).parameters.values()]
            assert runtime == [(a.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in node.args.args], name
        else:
            assert isinstance(node, ast.AnnAssign), name
            assert type(value).__name__ == ast.unparse(node.annotation).split("[")[0], name
            if isinstance(value, tuple):
                assert type(value) is type(getattr(_ka_py, name)), name
                assert [type(v) for v in value] == [type(v) for v in getattr(_ka_py, name)], name
