"""``ka.probe``: how long the path to a service keeps an idle TCP flow, how the flow dies, whether
keepalive probes keep it open, and the policy (or heartbeat) it needs. Linux, unprivileged::

    import ka.probe
    result = ka.probe("10.0.0.7:6379", max=600)     # ka.probe.measure(...): the typed name
    result.idle_timeout, result.death, result.probes_refresh
    ka.KeepAlive.for_path(result)                   # or result.recommended, result.policy

The public names (``__all__``) are here: ``measure`` and what it takes and gives (``Precision``,
``Progress``, ``ProbeResult``, ``Interrupted``, ``ProbeError``), the first wave's schedule
(``first_wave``), the far end (``listener``, ``serve``, ``HOLD``), and ``PathMeasurement``, what
``KeepAlive.for_path`` reads. The rooms behind them: ``plan`` (the search, no I/O), ``lines``
(the connections and TCP_INFO), ``run`` (the loop: ``measure``), ``result`` (``ProbeResult``,
the recommendation, text and JSON), ``serve`` (the far end of ``ka probe --serve``). How it
works and what it cannot see: docs/probe.md.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ..policy import PathMeasurement
from .plan import Precision, Progress, first_wave
from .result import ProbeResult
from .run import Interrupted, ProbeError, measure
from .serve import HOLD, listener, serve

__all__ = [
    "HOLD",
    "Interrupted",
    "PathMeasurement",
    "Precision",
    "ProbeError",
    "ProbeResult",
    "Progress",
    "first_wave",
    "listener",
    "measure",
    "serve",
]


class _CallableModule(types.ModuleType):
    """``ka.probe(...)`` is ``ka.probe.measure(...)``: the room's main call under its own name."""

    def __call__(self, *args: Any, **kwargs: Any) -> ProbeResult:
        return measure(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
