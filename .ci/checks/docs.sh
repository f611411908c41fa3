#!/usr/bin/env bash
# The documentation site: Sphinx (MyST markdown, furo) with warnings as errors, in its own venv
# with the `docs` extra and ka itself installed (autodoc imports it). The HTML lands in
# $DOCS_OUT (default: a temporary directory). The pages' >>> examples run with the test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCS_VENV=${DOCS_VENV:-.venv-docs}  # per checkout: parallel runs do not share it
PYTHON=${PYTHON:-python3}
OUT=${DOCS_OUT:-$(mktemp -d)}

[ -x "$DOCS_VENV/bin/python" ] || "$PYTHON" -m venv "$DOCS_VENV"
"$DOCS_VENV/bin/python" -m pip install -q --upgrade pip
"$DOCS_VENV/bin/python" -m pip install -q ".[docs]"

# -E: read every page afresh; -W --keep-going: report every warning, then fail on any.
"$DOCS_VENV/bin/python" -m sphinx -E -W --keep-going -b html docs "$OUT"
echo "documentation built without warnings: $OUT/index.html"
