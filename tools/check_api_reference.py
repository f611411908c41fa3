"""The built reference documents exactly the public names: run by ``nox -s docs`` after the build.

Reads the site's ``objects.inv`` (what Sphinx rendered and can link to). For every documented
module, the module-level objects it shows are exactly its ``__all__``; no object of an
undocumented (internal) module is shown. tests/adapters/test_api_reference.py checks the page's
source the same way without a build.

Usage: ``python tools/check_api_reference.py HTML_DIR`` (exit status 0 when it holds).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

from sphinx.util.inventory import InventoryFile


@functools.cache
def public_names(module_name: str) -> frozenset[str]:
    """A module's ``__all__``, read from its source: the libraries of ka.integrations need not be
    installed where the site is built (autodoc mocks them)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{module_name} is documented but cannot be found")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        if "__all__" in [t.id for t in node.targets if isinstance(t, ast.Name)]:
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


def _anchor(item: Any) -> str:
    """The fragment of an inventory entry's link (``_InventoryItem.uri`` from Sphinx 8.2, the
    third field of a tuple before)."""
    uri: str = getattr(item, "uri", None) or item[2]
    return uri.rpartition("#")[2]


def main(html: Path) -> int:
    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    python = {kind: names for kind, names in inventory.items() if kind.startswith("py:")}
    modules = set(python.get("py:module", {}))
    # An entry whose link names another object is the canonical alias autodoc adds for an object
    # documented under a re-exporting module (ka.policy.KeepAlive -> api.html#ka.KeepAlive): the
    # same entry, not one more.
    objects = {
        name
        for kind, names in python.items()
        if kind != "py:module"
        for name, item in names.items()
        if _anchor(item) == name
    }
    problems: list[str] = []
    for module_name in sorted(modules):
        public = public_names(module_name)
        prefix = module_name + "."
        # module-level objects: one name after the module's, and not a module of their own
        shown = {
            name.removeprefix(prefix)
            for name in objects
            if name.startswith(prefix) and "." not in name.removeprefix(prefix)
        }
        if shown != public:
            extra, lacking = sorted(shown - public), sorted(public - shown)
            problems.append(f"{module_name}: shows {extra} beyond __all__, lacks {lacking}")
    # an object outside every documented module, named twice over (ka.live.ka.live.X), or of a
    # module that is not documented (ka.policy.X shown under ka): the part after the nearest
    # documented module must start with a name of that module's __all__
    strays = []
    for name in sorted(objects):
        owner = max((m for m in modules if name.startswith(m + ".")), key=len, default=None)
        if ".ka." in name or owner is None or name[len(owner) + 1 :].split(".")[0] not in public_names(owner):
            strays.append(name)
    if strays:
        problems.append(f"objects of undocumented modules: {strays[:10]}")
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(f"API reference: {len(modules)} modules, each showing its __all__ ({len(objects)} names)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_api_reference.py HTML_DIR")
    sys.exit(main(Path(sys.argv[1])))
