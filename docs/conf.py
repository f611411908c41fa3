"""Sphinx configuration of ka's documentation (MyST markdown pages, furo theme).

Build: ``nox -s docs`` (warnings are errors), or in a venv with the ``docs`` dependency group:
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

from typing import Any

import ka

project = "ka"
author = "ka developers"
copyright = "ka developers"  # Sphinx's own name for it
release = ka.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# Build output, the literalinclude'd examples, and pytest's doctest helper are not pages.
exclude_patterns = ["_build", "examples", "conftest.py", ".venv*", "**/.ipynb_checkpoints"]

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links to headings down to ###

html_theme = "furo"
html_title = f"ka {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False  # the tables in api.md link to autodoc entries on the same page

# Pages that other branches of this repository add (written in parallel and merged later). A link
# to one of them resolves once it exists; until then it renders as plain text instead of failing
# the build. Remove a name here once its page is merged.
PAGES_FROM_OTHER_BRANCHES = {"servers/ka-listen"}


def _pending_page(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("reftype") == "doc" and node.get("reftarget", "").lstrip("/") in PAGES_FROM_OTHER_BRANCHES:
        return contnode
    return None


def setup(app: Any) -> None:
    app.connect("missing-reference", _pending_page)


# The client libraries ka.integrations wraps are optional; the reference needs none of them.
autodoc_mock_imports = ["urllib3", "requests", "httpx", "httpcore", "aiohttp"]
