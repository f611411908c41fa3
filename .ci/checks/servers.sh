#!/usr/bin/env bash
# ka listen and the server glue against the real servers (the `integrations` extra: gunicorn,
# uvicorn, uvicorn-worker, hypercorn), driven by wrk and read back with ka show. In its own venv,
# and with KA_REQUIRE_SERVERS=1 so that a missing server or tool fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${SERVERS_VENV:-.venv-servers}  # per checkout: parallel runs do not share it
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    for pkg in wrk iproute2; do
        dpkg -s "$pkg" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; }
    done
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q ".[test,integrations]"
KA_REQUIRE_SERVERS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_listen.py tests/test_server_glue.py tests/test_policy_strings.py
KA_REQUIRE_SERVERS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider --doctest-glob="*.md" \
    docs/concepts/policy-strings.md
