#!/usr/bin/env bash
# Packaging check (sdist, wheels from it on every pyenv CPython, header compile checks for Linux and
# Windows, cibuildwheel identifiers, workflow schema): see tools/check_dist.sh.
set -euo pipefail
exec bash "$(dirname "$0")/../../tools/check_dist.sh" "$@"
