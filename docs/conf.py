"""Sphinx configuration of ka's documentation (MyST markdown pages, furo theme).

Build: ``nox -s docs`` (warnings are errors), or in a venv with the ``docs`` dependency group:
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import ka

# The project's addresses, written once (pyproject.toml's [project.urls]).
PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
URLS = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["urls"]

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
    "sphinx_copybutton",
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
html_baseurl = URLS["Documentation"]
html_theme_options = {
    # "view the source" on every page, and the repository in the footer
    "source_repository": URLS["Source"],
    "source_branch": "main",
    "source_directory": "docs/",
    "footer_icons": [
        {"name": "Source", "url": URLS["Source"], "html": "source repository", "class": ""},
    ],
}

# The copy button copies the commands, not the prompts or the output: ">>> " and "... " in pycon
# blocks, "$ " in console blocks; a block without prompts (shell, python) is copied whole.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
copybutton_remove_prompts = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = False  # the tables in api.md link to autodoc entries on the same page

# Pages that other branches of this repository add (written in parallel and merged later). A link
# to one of them resolves once it exists; until then it renders as plain text instead of failing
# the build. Remove a name here once its page is merged.
PAGES_FROM_OTHER_BRANCHES: set[str] = set()


def _pending_page(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("reftype") == "doc" and node.get("reftarget", "").lstrip("/") in PAGES_FROM_OTHER_BRANCHES:
        return contnode
    return None


def setup(app: Any) -> None:
    app.connect("missing-reference", _pending_page)


# The libraries ka.integrations has glue for are optional (ka's extras); the reference needs none
# of them, so the site builds the same with or without them installed.
autodoc_mock_imports = [
    "aiohttp", "anyio", "asyncpg", "asyncssh", "gunicorn", "httpcore", "httpx", "hypercorn", "kafka",
    "kombu", "paramiko", "pika", "prometheus_client", "psycopg", "pymongo", "redis", "requests",
    "tornado", "trio", "twisted", "urllib3", "uvicorn", "websockets",
]  # fmt: skip
