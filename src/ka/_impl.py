"""Picks the compiled core or its pure-Python twin.

``KA_NO_EXTENSIONS`` set to a true value (``1``, ``true``, ``yes``, ``on``; any case) and any
Python other than CPython select the twin; ``0``, ``false``, ``no``, ``off`` or unset keep the
compiled core, and any other value is a ValueError naming it. Where the compiled core was wanted
but cannot be imported, the twin is used with a RuntimeWarning that names the import error, and
``ka.IMPLEMENTATION`` says ``"python"``; ``KA_REQUIRE_EXTENSIONS`` set to a true value turns that
into the ImportError itself.
"""

from __future__ import annotations

import os
import sys
import warnings

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """An on/off environment variable: True for 1/true/yes/on, False for unset, empty or 0/false/no/off."""
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ValueError(
        f"{name}={os.environ[name]!r} is not an on/off value: expected 1, true, yes or on (on), "
        "or 0, false, no, off or empty (off)"
    )


NO_EXTENSIONS = env_flag("KA_NO_EXTENSIONS") or sys.implementation.name != "cpython"

if NO_EXTENSIONS:
    from . import _ka_py as core
else:
    try:
        from . import _ka_c as core  # type: ignore[no-redef]
    except ImportError as error:
        if env_flag("KA_REQUIRE_EXTENSIONS"):
            raise
        # The twin gives the same results at about 2.5x the cost per socket: say so, once.
        warnings.warn(
            f"the compiled core of ka could not be imported ({type(error).__name__}: {error}); "
            "using the pure-Python twin, which is slower. Reinstall ka (a wheel, or a source build "
            "with a C compiler), set KA_NO_EXTENSIONS=1 to choose the twin without this warning, "
            "or KA_REQUIRE_EXTENSIONS=1 to make this an error.",
            RuntimeWarning,
            stacklevel=2,
        )
        from . import _ka_py as core

__all__ = ["FALSE_VALUES", "IMPLEMENTATION", "NO_EXTENSIONS", "TRUE_VALUES", "core", "env_flag"]

IMPLEMENTATION: str = core.IMPLEMENTATION
