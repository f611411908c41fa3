"""Picks the compiled core or its pure-Python twin.

``KA_NO_EXTENSIONS`` (any non-empty value) and any Python other than CPython select the twin.
Where the compiled core was wanted but cannot be imported, the twin is used and
``ka.IMPLEMENTATION`` says so; ``KA_REQUIRE_EXTENSIONS=1`` turns that into an ImportError.
"""

from __future__ import annotations

import os
import sys

NO_EXTENSIONS = bool(os.environ.get("KA_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

if NO_EXTENSIONS:
    from . import _ka_py as core
else:
    try:
        from . import _ka_c as core  # type: ignore[no-redef]
    except ImportError:
        if os.environ.get("KA_REQUIRE_EXTENSIONS"):
            raise
        from . import _ka_py as core

__all__ = ["IMPLEMENTATION", "NO_EXTENSIONS", "core"]

IMPLEMENTATION: str = core.IMPLEMENTATION
