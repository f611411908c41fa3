#!/usr/bin/env bash
# CPython 3.14 in a Debian sid chroot: see tools/check_py314.sh.
set -euo pipefail
exec bash "$(dirname "$0")/../../tools/check_py314.sh" "$@"
