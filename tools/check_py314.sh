#!/usr/bin/env bash
# CPython 3.14, which pyenv does not have here: a Debian sid chroot made with debootstrap (sid has
# python3.14 and python3.14-dev), in which ka's wheel is built from this tree with pip and the
# suite runs against it from outside the source tree (as tools/check_dist.sh does per pyenv
# Python). About 2 minutes: debootstrap ~1 min, the build ~20 s, the suite ~40 s.
# Needs root (debootstrap, chroot, mount) and the machine's Debian mirror (read from its apt
# sources, so nothing here names a host). The chroot lives in a temporary folder, removed after.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "skipped: needs root for debootstrap and chroot"; exit 0; }
command -v debootstrap >/dev/null || fail "debootstrap is not installed (see .ci/apt-packages.txt)"

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || fail "no Debian mirror in this machine's apt sources"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ka-py314.XXXXXX")
CHROOT="$WORK/root"
cleanup() {
    mountpoint -q "$CHROOT/proc" && umount "$CHROOT/proc"
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

echo "== debootstrap sid (python3.14, python3.14-dev, gcc)"
debootstrap --variant=minbase --include=python3.14,python3.14-dev,python3.14-venv,gcc,libc6-dev \
    sid "$CHROOT" "$mirror" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
# The host's resolver and trust store, so pip inside reaches the package index as pip outside does.
cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$CHROOT/etc/ssl/certs/ca-certificates.crt"
mount -t proc proc "$CHROOT/proc"  # the tests read /proc/self/fd and fdinfo
mkdir "$CHROOT/ka"
git ls-files -z | tar --null -T - -c | tar -x -C "$CHROOT/ka"

echo "== $(chroot "$CHROOT" python3.14 --version): wheel built by pip from this tree, suite outside it"
chroot "$CHROOT" /bin/sh -euc '
    python3.14 -m venv /opt/venv
    /opt/venv/bin/python -m pip install -q "/ka[test]" numpy 2>&1 | grep -v "^WARNING: Location" || true
    mkdir /opt/run && cd /ka && cp -r tests docs README.md pyproject.toml /opt/run/ && cd /opt/run
    KA_REQUIRE_EXTENSIONS=1 /opt/venv/bin/python /ka/tools/test_wheel.py >/opt/smoke.log
    tail -n 1 /opt/smoke.log
    /opt/venv/bin/python -c "import ka, sys; assert ka.IMPLEMENTATION == \"c\"; print(\"import ka ->\", ka.__file__)"
    status=0
    /opt/venv/bin/python -m pytest -q -p no:cacheprovider -m "not netns" tests >/opt/pytest.log 2>&1 || status=$?
    [ "$status" = 0 ] || grep -E "^(FAILED|ERROR)" /opt/pytest.log || true
    tail -n 1 /opt/pytest.log
    exit "$status"
'
echo "== CPython 3.14 passed"
