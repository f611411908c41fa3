#!/usr/bin/env bash
# The CPythons that pyenv does not have here (3.14, 3.15): a Debian sid chroot made with
# debootstrap (sid packages python3.14 and python3.15 with their -dev and -venv), in which, for
# each version, ka's wheel is built from this tree with pip and the suite runs against it from
# outside the source tree (as tools/check_dist.sh does per pyenv Python). About 3 minutes:
# debootstrap ~1 min, then per version the build ~20 s and the suite ~40 s.
# KA_SID_PYTHONS: the versions to check (default "3.14 3.15"). The free-threaded builds (3.14t,
# 3.15t) are not packaged by Debian: they run on the wheel runners only (cibuildwheel).
# Needs root (debootstrap, chroot, mount) and the machine's Debian mirror (read from its apt
# sources, so nothing here names a host). The chroot lives in a temporary folder, removed after.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSIONS=${KA_SID_PYTHONS:-"3.14 3.15"}
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "skipped: needs root for debootstrap and chroot"; exit 0; }
command -v debootstrap >/dev/null || fail "debootstrap is not installed (see .ci/apt-packages.txt)"

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || fail "no Debian mirror in this machine's apt sources"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ka-sid.XXXXXX")
CHROOT="$WORK/root"
cleanup() {
    for point in "$CHROOT/dev/pts" "$CHROOT/proc" "$CHROOT"; do
        mountpoint -q "$point" && umount "$point"
    done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# procps: sysctl, for the ka defaults --persist test
packages=gcc,libc6-dev,procps
for version in $VERSIONS; do packages="$packages,python$version,python$version-dev,python$version-venv"; done
echo "== debootstrap sid ($packages)"
debootstrap --variant=minbase --include="$packages" sid "$CHROOT" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
# The host's resolver and trust store, so pip inside reaches the package index as pip outside does.
cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$CHROOT/etc/ssl/certs/ca-certificates.crt"
# The chroot's root a mount point of its own (unshare --propagation private, in the read-only
# /proc/sys test, needs one), /proc (the tests read /proc/self/fd and fdinfo) and the host's
# ptys (the terminal tests open one through /dev/ptmx).
mount --bind "$CHROOT" "$CHROOT"
mount -t proc proc "$CHROOT/proc"
mkdir -p "$CHROOT/dev/pts"
mount --bind /dev/pts "$CHROOT/dev/pts"
mkdir "$CHROOT/ka"
git ls-files -z | tar --null -T - -c | tar -x -C "$CHROOT/ka"

for version in $VERSIONS; do
    echo "== $(chroot "$CHROOT" "python$version" --version): wheel built by pip from this tree, suite outside it"
    chroot "$CHROOT" /usr/bin/env PY="python$version" V="$version" /bin/sh -euc '
        venv=/opt/venv-$V run=/opt/run-$V
        $PY -m venv $venv
        $venv/bin/python -m pip install -q "/ka[test]" numpy 2>&1 | grep -v "^WARNING: Location" || true
        mkdir $run && cd /ka && cp -r tests docs README.md pyproject.toml noxfile.py $run/ && cd $run
        KA_REQUIRE_EXTENSIONS=1 $venv/bin/python /ka/tools/test_wheel.py >$run/smoke.log
        tail -n 1 $run/smoke.log
        $venv/bin/python -c "import ka, sys; assert ka.IMPLEMENTATION == \"c\"; print(\"import ka ->\", ka.__file__)"
        status=0
        $venv/bin/python -m pytest -q -p no:cacheprovider -m "not netns" tests >$run/pytest.log 2>&1 || status=$?
        [ "$status" = 0 ] || grep -E "^(FAILED|ERROR)" $run/pytest.log || true
        tail -n 1 $run/pytest.log
        exit "$status"
    '
    echo "== CPython $version passed"
done
