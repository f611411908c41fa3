"""ka: TCP keepalive for one socket or a whole pool.

import ka
policy = ka.KeepAlive(idle=60, interval=10, count=5)   # seconds, seconds, probes
ka.apply(sock, policy)                                  # a socket, an fd, or anything with fileno()
result = ka.apply_many(pool, policy)                    # every input applied or listed in result.failed
ka.read(sock)                                           # the values the kernel reports

The face only: every name here is defined in a module below it (``ka.policy``, ``ka.results``,
``ka.system``, ``ka.bulk``, ``ka.bridge``, ``ka.facts``) or is the active core's own (``apply``, ``read``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._impl import IMPLEMENTATION, core
from ._options import Option
from .bridge import RetrofitResult, retrofit
from .bulk import apply_many, read_many, release_workers
from .facts import Capabilities, capabilities
from .policy import KeepAlive, resolve_policy
from .results import BulkError, BulkResult, Failure, KeepAliveSettings, ReadResult
from .system import SystemDefaults, system_defaults

__version__ = "0.1.0"  # the one place: pyproject.toml reads it ([tool.setuptools.dynamic])

# The core's own functions: no Python frame between a caller and the compiled code. Both cores
# have the same signatures (_ka_c.pyi mirrors _ka_py): type checkers read the twin's.
if TYPE_CHECKING:
    from ._ka_py import apply, read
else:
    apply = core.apply
    read = core.read

__all__ = [
    "IMPLEMENTATION",
    "BulkError",
    "BulkResult",
    "Capabilities",
    "Failure",
    "KeepAlive",
    "KeepAliveSettings",
    "Option",
    "ReadResult",
    "RetrofitResult",
    "SystemDefaults",
    "__version__",
    "apply",
    "apply_many",
    "capabilities",
    "read",
    "read_many",
    "release_workers",
    "resolve_policy",
    "retrofit",
    "system_defaults",
]

del core


def __dir__() -> list[str]:
    """The public face: what ``__all__`` lists (submodules stay reachable as attributes)."""
    return sorted(__all__)
