#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine, then the suite itself: the README's
# test command. As root on Debian, scripts/system-packages.sh first says which system tools it
# installs (and which services Debian starts with them), then installs them; without root those
# tests skip with a reason. Then `nox -s tests` (noxfile.py) installs ka from this tree with its
# `test` extra and the `peers` dependency group into .nox/tests and runs pytest; scripts/nox.sh
# gets nox itself into .venv. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== 1/3 system packages"
bash scripts/system-packages.sh
echo "== 2/3 nox (into ${VENV:-.venv}) and 3/3 the tests session: ka and its test peers into .nox/tests, then pytest"
exec bash scripts/nox.sh -s tests -- "$@"
