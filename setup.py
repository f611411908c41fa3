"""Build the compiled core and the package index's description; everything else is in pyproject.toml."""

import os
import re
import sys
from pathlib import Path

from setuptools import Extension, setup

if sys.version_info < (3, 11):  # before tomllib below fails with a less helpful message
    sys.exit(f"ka needs Python 3.11 or later (requires-python in pyproject.toml), not {sys.version_info[:2]}")

import tomllib

HERE = Path(__file__).parent
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """An on/off environment switch, as src/ka/_impl.py reads it (KA_NO_EXTENSIONS=0 is off)."""
    value = os.environ.get(name, "").strip().lower()
    if value not in TRUE + FALSE:
        sys.exit(f"{name}={os.environ[name]!r}: expected 1, true, yes, on (on) or 0, false, no, off (off)")
    return value in TRUE


def index_description() -> str:
    """README.md with its relative links made absolute: into the documentation site for docs/
    pages (a GitHub reader follows the relative link; the package index has no docs/ folder)."""
    urls = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    docs, source = urls["Documentation"].rstrip("/"), urls["Source"].rstrip("/")

    def absolute(match: re.Match[str]) -> str:
        path, anchor = match["path"], match["anchor"] or ""
        if path.startswith("docs/"):
            page = path.removeprefix("docs/")
            page = re.sub(r"(^|/)index\.md$", r"\1", page)  # a folder's index is the folder
            page = re.sub(r"\.md$", ".html", page)
            return f"]({docs}/{page}{anchor})"
        return f"]({source}/blob/main/{path}{anchor})"

    # ](path) and ](path#anchor) where path has no scheme and is not an anchor alone
    link = re.compile(r"\]\((?P<path>(?![a-z][a-z0-9+.-]*:|#)[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")
    return link.sub(absolute, (HERE / "README.md").read_text(encoding="utf-8"))


# The pure-Python twin serves PyPy and anyone who asks for no extension.
NO_EXTENSIONS = env_flag("KA_NO_EXTENSIONS") or sys.implementation.name != "cpython"

if NO_EXTENSIONS:
    ext_modules = []
else:
    from Cython.Build import cythonize

    if sys.platform == "win32":
        libraries = ["ws2_32"]
        compile_args = []  # MSVC writes debug info to a .pdb only when asked (/Zi): none by default
    else:
        # manylinux2014's glibc keeps pthread_create in libpthread.
        libraries = ["pthread"]
        # Python's own CFLAGS carry -g: without it the module is 157 KB, not 891 KB (x86_64 Linux).
        # KA_DEBUG_BUILD=1 keeps the debug info (for gdb or a core file).
        compile_args = [] if env_flag("KA_DEBUG_BUILD") else ["-g0"]
    ext_modules = cythonize(
        [
            Extension(
                "ka._ka_c",
                ["src/ka/_ka_c.pyx"],
                depends=[
                    "src/ka/_platform.h",
                    "src/ka/_ka_posix.h",
                    "src/ka/_ka_windows.h",
                    "src/ka/_ka_fds.h",
                    "src/ka/_ka_bulk.h",
                    "src/ka/_ka_uring.h",
                ],
                include_dirs=["src/ka"],
                libraries=libraries,
                extra_compile_args=compile_args,
            )
        ],
        compiler_directives={"language_level": "3"},
    )

setup(
    ext_modules=ext_modules,
    long_description=index_description(),
    long_description_content_type="text/markdown",
)
