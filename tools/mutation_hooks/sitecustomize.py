"""Loaded at start-up by every Python process of a mutation run (tools/mutation.py puts this
folder first on PYTHONPATH); does nothing outside one.

While mutmut maps tests to functions (``MUTANT_UNDER_TEST=stats``), the functions a *subprocess*
calls (``python -m ka ...``, a server a test starts) are recorded in that subprocess's memory and
lost when it exits. Here each first call of a mutated function is also appended to a file in
``$KA_MUTATION_HITS``, at once (a server killed by its test never reaches atexit); the pytest
plugin beside this file hands them to mutmut, which maps them to the running test.
"""

from __future__ import annotations

import os
import sys


def _record_subprocess_hits(hits_dir: str) -> None:
    try:
        from mutmut.mutation import trampoline
    except ImportError:
        return
    seen: set[str] = set()
    path = os.path.join(hits_dir, f"{os.getpid()}.hits")

    # Replaces mutmut's recorder, which needs mutmut's configuration (read from the current
    # directory, which a subprocess may have changed) and keeps the names in memory.
    def record(name: str, caller: str | None = None) -> None:
        if name not in seen:
            seen.add(name)
            try:
                with open(path, "a", encoding="utf-8") as hits:
                    hits.write(name + "\n")
            except OSError:
                pass  # a process that cannot write there (a test's other user) still runs

    vars(trampoline)["record_trampoline_hit"] = record  # the name the trampolines call


_hits_dir = os.environ.get("KA_MUTATION_HITS")
# Not in mutmut's own pytest process (the plugin is loaded there): mutmut records its hits per test.
if _hits_dir and os.environ.get("MUTANT_UNDER_TEST") == "stats" and "ka_mutation_plugin" not in sys.modules:
    _record_subprocess_hits(_hits_dir)
