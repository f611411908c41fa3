#!/usr/bin/env bash
# nox (noxfile.py: every check of ka) without installing it first: makes $VENV (default .venv) with
# the nox pinned in pyproject.toml's `nox` dependency group, then runs it with the arguments given,
# e.g. `bash scripts/nox.sh -l` or `bash scripts/nox.sh -s lint`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

[ -x "$VENV/bin/python" ] || { echo "making $VENV with $PYTHON"; "$PYTHON" -m venv "$VENV"; }
# pip 25.1 or later reads dependency groups (--group); nothing to do when nox is already there.
if plan=$("$VENV/bin/python" -m pip install --dry-run --group nox 2>/dev/null) && ! grep -q "Would install" <<<"$plan"; then
    :  # the pinned nox is there
else
    echo "installing nox (pyproject.toml's nox group) into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q --group nox
fi
exec "$VENV/bin/nox" "$@"
