#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine, then the suite itself: the README's
# test command. Root installs the system tools the kernel-level and integration tests use; without
# root those tests skip with a reason. Then `nox -s tests` (noxfile.py) installs ka from this tree
# with its `test` and `integrations` extras into .nox/tests and runs pytest; scripts/nox.sh gets
# nox itself into .venv. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-packages.sh
exec bash scripts/nox.sh -s tests -- "$@"
