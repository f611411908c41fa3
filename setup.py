"""Build the compiled core; everything else is in pyproject.toml."""

import os
import sys

from setuptools import Extension, setup

# The pure-Python twin serves PyPy and anyone who asks for no extension.
NO_EXTENSIONS = bool(os.environ.get("KA_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

if NO_EXTENSIONS:
    ext_modules = []
else:
    from Cython.Build import cythonize

    if sys.platform == "win32":
        libraries = ["ws2_32"]
    else:
        # manylinux2014's glibc keeps pthread_create in libpthread.
        libraries = ["pthread"]
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
            )
        ],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
