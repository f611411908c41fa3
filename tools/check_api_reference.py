"""The built reference documents exactly the public names: run by ``nox -s docs`` after the build.

Reads the site's ``objects.inv`` (what Sphinx rendered and can link to). For every documented
module, the module-level objects it shows are exactly its ``__all__``; no object of an
undocumented (internal) module is shown. tests/adapters/test_api_reference.py checks the page's
source the same way without a build.

Usage: ``python tools/check_api_reference.py HTML_DIR`` (exit status 0 when it holds).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from sphinx.util.inventory import InventoryFile


def main(html: Path) -> int:
    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    python = {kind: names for kind, names in inventory.items() if kind.startswith("py:")}
    modules = set(python.get("py:module", {}))
    objects = {name for kind, names in python.items() if kind != "py:module" for name in names}
    problems: list[str] = []
    for module_name in sorted(modules):
        module = importlib.import_module(module_name)
        public = set(getattr(module, "__all__", ()))
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
    # an object outside every documented module, or named twice over (ka.live.ka.live.X)
    strays = sorted(
        name
        for name in objects
        if ".ka." in name or (name.startswith("ka") and not any(name.startswith(m + ".") for m in modules))
    )
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
