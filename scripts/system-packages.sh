#!/usr/bin/env bash
# The Debian packages the tests and checks use (.ci/apt-packages.txt), installed when run as root on
# a Debian machine and missing; elsewhere nothing is done (those tests skip with a reason).
# It says what it will install, and which services Debian starts with them, before it starts;
# on a terminal it waits 10 s so the user can stop it. KA_SYSTEM_PACKAGES=0 skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian starts these when the package is installed: the tests talk to them on loopback.
SERVICES="redis-server postgresql rabbitmq-server openssh-server"

case "${KA_SYSTEM_PACKAGES:-1}" in
    0 | false | no | off)
        echo "KA_SYSTEM_PACKAGES=${KA_SYSTEM_PACKAGES}: no Debian packages installed (the tests needing them skip)"
        exit 0 ;;
esac
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "Debian packages: not installed (needs root on Debian); the tests needing them skip with a reason"
    exit 0
fi
missing=()
while read -r pkg; do
    [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < .ci/apt-packages.txt
if [ ${#missing[@]} = 0 ]; then
    echo "Debian packages: all of .ci/apt-packages.txt are installed"
    exit 0
fi
started=()
for pkg in "${missing[@]}"; do
    case " $SERVICES " in *" $pkg "*) started+=("$pkg") ;; esac
done
echo "Debian packages: installing ${#missing[@]} for the kernel-level and integration tests (.ci/apt-packages.txt):"
echo "  ${missing[*]}"
if [ ${#started[@]} -gt 0 ]; then
    echo "  Debian starts these services when it installs them (on this machine, until you stop them):"
    echo "  ${started[*]}"
fi
echo "  (KA_SYSTEM_PACKAGES=0 skips this; those tests then skip with a reason)"
if [ -t 0 ]; then
    echo "  starting in 10 s: Ctrl-C to stop"
    sleep 10
fi
echo "apt-get update"
apt-get update -qq
# One line per package as dpkg sets it up: progress, without apt's full output.
total=${#missing[@]}
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" 2>&1 |
    awk -v total="$total" '
        /^Setting up / { n++; printf "  [%d set up] %s\n", n, $3; fflush() }
        /^E: / { print; fflush() }
        END { printf "  done: %d packages set up (%d asked for, the rest their dependencies)\n", n, total }'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "apt-get install failed (above)"; exit 1; }
