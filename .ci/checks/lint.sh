#!/usr/bin/env bash
# Lint and type-check: ruff and mypy --strict over src, tests and tools (config in pyproject.toml),
# in their own venv so the project's venv stays as users have it. Tool versions are pinned.
set -euo pipefail
cd "$(dirname "$0")/../.."
LINT_VENV=${LINT_VENV:-.venv-lint}  # per checkout: parallel runs do not share it
PYTHON=${PYTHON:-python3}

[ -x "$LINT_VENV/bin/python" ] || "$PYTHON" -m venv "$LINT_VENV"
# The test dependencies are installed for their type information only.
"$LINT_VENV/bin/python" -m pip install -q "mypy==2.4.1" "ruff==0.17.6" pytest hypothesis numpy \
    redis urllib3 requests httpx aiohttp psycopg uvloop \
    asyncpg kombu celery pika kafka-python paramiko asyncssh pymongo sqlalchemy trustme socksio
# the servers ka.integrations has glue for (the integrations extra), for their types too
"$LINT_VENV/bin/python" -m pip install -q websockets tornado twisted trio anyio gunicorn uvicorn uvicorn-worker hypercorn

"$LINT_VENV/bin/ruff" --version
"$LINT_VENV/bin/ruff" check --no-cache src tests tools benchmarks docs
echo "mypy --strict (files and options from pyproject.toml)"
"$LINT_VENV/bin/mypy" --no-incremental --cache-dir=/dev/null
