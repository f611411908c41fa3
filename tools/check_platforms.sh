#!/usr/bin/env bash
# Every OS branch of the C shim, from this Linux machine (about a minute; run it as `nox -s platforms`,
# which puts the tools of the `platforms` dependency group and the test extra on PATH):
#   1. the real headers cross-compiled with -Wall -Wextra -Werror by zig's clang (PyPI `ziglang`)
#      for macOS x86_64/arm64, Windows x86_64/arm64, FreeBSD, NetBSD, OpenBSD, Linux musl and
#      glibc 2.17, and by mingw-w64; tools/platform_constants.c checks the stand-in's option
#      numbers against each SDK; a FreeBSD build with _XOPEN_SOURCE must fail loudly;
#   2. the Cython output compiled for macOS and Windows against this host's CPython headers
#      (a syntax and type check of the generated C only: no target pyconfig.h, nothing linked);
#   3. the recording stand-in (tests/adapters/test_platforms.py): every OS branch's exact call sequences,
#      and those of macOS and FreeBSD replayed on the model of their keepalive timers
#      (tests/adapters/test_retrofit_model.py: the retrofit drop and ka.retrofit's bridge);
#   4. the mingw build of the Windows branch run under Wine (tools/wine_check.c).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ka-platforms.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }
export PIP_DISABLE_PIP_VERSION_CHECK=1

step "tools: $(command -v python) (ziglang, Cython, pytest)"
python -c "import ziglang, Cython, pytest" 2>/dev/null ||
    fail "ziglang, Cython or pytest missing: run this check as \`nox -s platforms\`"
ZIG=(python -m ziglang)

step "C shim: real headers, -Wall -Wextra -Werror, every target in parallel"
TARGETS="x86_64-macos aarch64-macos x86_64-windows-gnu aarch64-windows-gnu x86_64-freebsd x86_64-netbsd x86_64-openbsd x86_64-linux-musl x86_64-linux-gnu.2.17"
pids=()
for t in $TARGETS; do
    (
        "${ZIG[@]}" cc -target "$t" -std=c99 -Wall -Wextra -Werror -I src/ka -c tools/win_compile_check.c \
            -o "$WORK/shim-$t.o" && \
        "${ZIG[@]}" cc -target "$t" -std=c11 -Wall -Wextra -Werror -c tools/platform_constants.c \
            -o "$WORK/const-$t.o"
    ) >"$WORK/$t.log" 2>&1 &
    pids+=($!)
done
(x86_64-w64-mingw32-gcc -std=c99 -pedantic -Wall -Wextra -Werror -I src/ka -c tools/win_compile_check.c \
    -o "$WORK/shim-mingw.o" && \
 x86_64-w64-mingw32-gcc -std=c99 -Wall -Wextra -Werror -Wno-unused-function -I src/ka tools/wine_check.c \
    -o "$WORK/wine_check.exe" -lws2_32) >"$WORK/mingw.log" 2>&1 &
pids+=($!)
bad=0
for pid in "${pids[@]}"; do wait "$pid" || bad=1; done
for t in $TARGETS mingw; do
    if [ -s "$WORK/$t.log" ]; then echo "-- $t:"; cat "$WORK/$t.log"; fi
done
[ "$bad" = 0 ] || fail "a target did not compile clean (see above)"
echo "compile clean: $TARGETS x86_64-w64-mingw32"
# ka bench's C floor (compiled at run time by `ka bench`) on the other POSIX systems ka ships for.
KA_NO_EXTENSIONS=1 python -c 'import sys; sys.path.insert(0, "src"); from ka.bench.floor import SOURCE; print(SOURCE)' \
    >"$WORK/floor.c"
for t in x86_64-macos aarch64-macos x86_64-freebsd x86_64-netbsd; do
    "${ZIG[@]}" cc -target "$t" -Wall -Werror -c "$WORK/floor.c" -o "$WORK/floor-$t.o" ||
        fail "ka bench's C floor does not compile for $t"
done
echo "ka bench C floor compiles for macOS, FreeBSD, NetBSD"
# ka/system.py's sysctl numbers and units for NetBSD and OpenBSD, against their headers.
for t in x86_64-netbsd x86_64-openbsd; do
    "${ZIG[@]}" cc -target "$t" -std=c11 -Wall -Wextra -Werror -c tools/sysctl_constants.c \
        -o "$WORK/sysctl-$t.o" || fail "ka/system.py's sysctl constants differ from the $t headers"
done
echo "system_defaults() sysctl numbers and units match NetBSD and OpenBSD"
# A knob that compiles out must fail loudly: FreeBSD hides TCP_KEEP* without __BSD_VISIBLE.
if "${ZIG[@]}" cc -target x86_64-freebsd -D_XOPEN_SOURCE=700 -Wall -Werror -I src/ka -c tools/win_compile_check.c \
    -o "$WORK/xopen.o" 2>"$WORK/xopen.log"; then
    fail "FreeBSD with _XOPEN_SOURCE compiled: the keepalive options vanished in silence"
fi
grep -q "are hidden" "$WORK/xopen.log" || { cat "$WORK/xopen.log"; fail "not the shim's own #error"; }
echo "FreeBSD with _XOPEN_SOURCE=700: refused by the shim's #error, as it must be"

step "Cython output for macOS and Windows (host CPython headers; compile only)"
cython -3 src/ka/_ka_c.pyx -o "$WORK/_ka_c.c"
PYINC=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
for t in x86_64-macos aarch64-macos; do
    "${ZIG[@]}" cc -target "$t" -c -w -I src/ka -I "$PYINC" "$WORK/_ka_c.c" -o "$WORK/pyx-$t.o" ||
        fail "the Cython output does not compile for $t"
    echo "$t: the generated _ka_c.c compiles"
done
# Windows: CPython's headers for Windows need PC/pyconfig.h, which a Linux CPython does not ship.
echo "Windows: not compiled (no Windows pyconfig.h here); the shim itself is compiled above"

step "recording stand-in: every OS branch's call sequences, and the keepalive timer model"
KA_NO_EXTENSIONS=1 PYTHONPATH="$ROOT/src" python -m pytest -q -p no:cacheprovider \
    tests/adapters/test_platforms.py tests/adapters/test_retrofit_model.py

step "Windows branch under Wine (mingw build; Wine has no TCP_KEEP*/TCP_MAXRT*: the old-Windows path)"
if ! command -v wine >/dev/null; then
    fail "wine is not installed (see .ci/apt-packages.txt)"
fi
export WINEPREFIX="$WORK/wineprefix" WINEDEBUG=-all
timeout 180 wine "$WORK/wine_check.exe" | tr -d '\r' >"$WORK/wine.out" || { cat "$WORK/wine.out"; fail "wine run"; }
cat "$WORK/wine.out"
cat >"$WORK/wine.want" <<'WANT'
apply_full=10042 option=4
apply_no_count=0 option=0
apply_interval_only=10042 option=3
apply_user_timeout=10042 option=5
read=0 option=0
values=1,-1,-1,-1,-1
bulk_failed=0 errnos=0,0 first_bad=-1 platform=4
first_bad_unsigned=1
probe=10042,10042,10042,10042,10042
WANT
wineserver -w 2>/dev/null || true  # let Wine finish before the prefix is removed
diff -u "$WORK/wine.want" "$WORK/wine.out" || fail "the Windows branch under Wine did not answer as expected"

step "platform checks passed"
