"""gunicorn with a keepalive policy on its listeners (checked against gunicorn 27.0.1, with the
sync and gthread workers and uvicorn-worker 0.4.0's ``UvicornWorker``; uvicorn 0.54.0).

As the config module (the policy from ``KA_POLICY``)::

    export KA_POLICY="idle=60 interval=10 count=5"
    gunicorn -c python:ka.integrations.gunicorn -w 4 -k gthread app:app

In your own config file, import the hooks and name the policy (``keepalive_policy``: a policy
string or a ``ka.KeepAlive``; without it, ``KA_POLICY``)::

    # gunicorn.conf.py
    from ka.integrations.gunicorn import on_starting, when_ready, on_reload, post_fork
    keepalive_policy = "idle=60 interval=10 count=5"

A config that has its own hook of the same name calls ours from it (``ka.integrations.gunicorn.
when_ready(server)``).

The hooks, and the gunicorn code each relies on:

- ``on_starting(server)``: reads the policy, so a bad or missing one stops gunicorn before it
  binds anything (``Arbiter.start``; a ``RuntimeError`` is printed as ``Error: ...``, exit 1).
- ``when_ready(server)`` and ``on_reload(server)``: give every TCP listener in
  ``server.LISTENERS`` the policy, and say so in one info line per listener through gunicorn's
  log (``ka: keepalive idle=60 interval=10 count=5 on 127.0.0.1:8000, inherited by accepted
  connections``). gunicorn calls ``listen()`` in ``sock.create_sockets`` before
  any hook runs; on Linux the connections already queued are counted and get the policy when a
  worker accepts them. Listeners from ``LISTEN_FDS`` (``ka listen``, systemd) get it too.
- ``post_fork(server, worker)``: in each worker. With ``reuse_port`` every worker makes its own
  listeners (``Arbiter.spawn_worker``, before ``post_fork``): they get the policy here. Where the
  OS does not copy a listener's options into accepted sockets (macOS, Windows), or connections
  were queued before the policy, each accepted socket gets it: sync and gthread workers accept
  with ``listener.accept()`` on the objects in ``worker.sockets``, which ka wraps; uvicorn's
  workers accept inside the event loop, so ka replaces ``worker.config``'s HTTP protocol class
  with one whose ``connection_made`` applies the policy first.

On Linux and FreeBSD nothing runs per connection: accepted sockets inherit the listener's options.
``keepalive_platform = ka.server.MACOS`` in the config simulates macOS (for tests).
Unix-socket listeners are skipped (no TCP keepalive). With ``ka listen`` no hook is needed on Linux:
``ka listen 0.0.0.0:8000 -- gunicorn app:app`` (without ``--bind``: gunicorn takes
``LISTEN_FDS`` by itself, and ``--bind fd://3`` next to it fails).

ka does not depend on gunicorn; this module imports nothing from it.
"""

from __future__ import annotations

import functools
import importlib
import socket as _socket
import sys as _sys
from collections.abc import Callable, Sequence
from typing import Any

from ..policy import KeepAlive, resolve_policy
from ..server import PER_ACCEPT, ListenerPlan, Platform, prepare_listener
from ._serving import keepalive_protocol
from .serving import AcceptHook

# Only the hooks are gunicorn setting names: gunicorn reads every module-level name of a config
# module, so nothing else here may share a name with one of its settings.
__all__ = ["keepalive_setting", "on_reload", "on_starting", "post_fork", "when_ready"]


class _State:
    """The master's policy and listener plans; workers get a copy when gunicorn forks them."""

    policy: KeepAlive | None = None
    platform: Platform | None = None
    plans: dict[int, ListenerPlan] = {}  # noqa: RUF012  (one process-wide table)


def keepalive_setting(cfg: Any, name: str) -> Any:
    """The value of ``name`` in the config gunicorn loaded (``-c FILE`` or ``-c python:MODULE``,
    or ./gunicorn.conf.py), or None. gunicorn ignores names it does not know; ka reads them here."""
    location = str(getattr(cfg, "config", None) or "")
    if location.startswith("python:"):
        module = _sys.modules.get(location[len("python:") :])
    else:
        module = _sys.modules.get("__config__")  # gunicorn's name for a config file's module
    return None if module is None else getattr(module, name, None)


def _load(cfg: Any) -> tuple[KeepAlive, Platform]:
    try:
        policy = resolve_policy(keepalive_setting(cfg, "keepalive_policy"))
        platform = Platform.check(keepalive_setting(cfg, "keepalive_platform"))
    except (TypeError, ValueError) as exc:
        # gunicorn prints a RuntimeError as "Error: ..." and exits 1.
        raise RuntimeError(f"ka.integrations.gunicorn: {exc}") from None
    _State.policy, _State.platform = policy, platform
    return policy, platform


def _loaded(cfg: Any) -> tuple[KeepAlive, Platform]:
    if _State.policy is None or _State.platform is None:
        return _load(cfg)
    return _State.policy, _State.platform


def _tcp(listener: Any) -> bool:
    return getattr(listener, "family", None) in (_socket.AF_INET, _socket.AF_INET6)


def _prepare(listeners: Sequence[Any], policy: KeepAlive, platform: Platform, log: Any = None) -> None:
    for listener in listeners:
        if _tcp(listener):
            plan = prepare_listener(listener, policy, platform=platform)
            _State.plans[listener.fileno()] = plan
            _log_plan(log, listener, plan)


def _log_plan(log: Any, listener: Any, plan: ListenerPlan) -> None:
    """One info line through gunicorn's own logger (``server.log``), as ``ka listen`` prints."""
    info = getattr(log, "info", None)
    if info is None:
        return
    host, port = listener.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    how = "inherited by accepted connections" if plan.inherits else "applied to each accepted connection"
    info("ka: keepalive %s on %s, %s", plan.policy, where, how)


def on_starting(server: Any) -> None:
    """Reads the policy (``keepalive_policy`` in the config, else ``KA_POLICY``) before gunicorn
    binds anything; a bad or missing one stops it with ``Error: ...``."""
    _load(server.cfg)


def when_ready(server: Any) -> None:
    """Gives every TCP listener of the arbiter the policy (once they exist, before any worker)."""
    policy, platform = _loaded(server.cfg)
    _prepare(server.LISTENERS, policy, platform, getattr(server, "log", None))


def on_reload(server: Any) -> None:
    """After ``SIGHUP``: the config is read again and new listeners (a changed ``bind``) get the policy."""
    _State.policy = None
    policy, platform = _load(server.cfg)
    _prepare(server.LISTENERS, policy, platform, getattr(server, "log", None))


def _accepting(accept: Callable[[], tuple[Any, Any]], plan: ListenerPlan) -> Callable[[], tuple[Any, Any]]:
    @functools.wraps(accept)
    def accept_with_policy() -> tuple[Any, Any]:
        conn, address = accept()
        plan.accepted_or_closed(conn)
        return conn, address

    return accept_with_policy


def _uvicorn_config(worker: Any) -> Any:
    """The uvicorn ``Config`` of a uvicorn worker (uvicorn-worker, uvicorn.workers), else None."""
    config = getattr(worker, "config", None)
    if config is None or "uvicorn" not in _sys.modules:
        return None
    uvicorn = _sys.modules["uvicorn"]
    return config if isinstance(config, uvicorn.Config) else None


def _resolved_protocol(config: Any) -> type[Any]:
    http = config.http
    if not isinstance(http, str):
        return http  # type: ignore[no-any-return]
    uvicorn_config = importlib.import_module("uvicorn.config")
    importer = importlib.import_module("uvicorn.importer")
    return importer.import_from_string(uvicorn_config.HTTP_PROTOCOLS.get(http, http))  # type: ignore[no-any-return]


def post_fork(server: Any, worker: Any) -> None:
    """In each worker: ``reuse_port`` listeners get the policy; where ka must apply it per accepted
    socket, the worker's accept path is wrapped (see the module's doc)."""
    policy, platform = _loaded(server.cfg)
    listeners = [lnr for lnr in worker.sockets if _tcp(lnr)]
    if server.cfg.reuse_port:
        _prepare(listeners, policy, platform, getattr(worker, "log", None))  # this worker's own
    plans = [_State.plans[lnr.fileno()] for lnr in listeners if lnr.fileno() in _State.plans]
    if not any(plan.mode == PER_ACCEPT or plan.pending for plan in plans):
        return  # the kernel copies the policy into every accepted socket
    config = _uvicorn_config(worker)
    if config is not None:
        # One hook over every listener: it tells which one accepted each socket (their queues differ).
        config.http = keepalive_protocol(_resolved_protocol(config), AcceptHook(plans))
        return
    for listener in listeners:
        plan = _State.plans.get(listener.fileno())
        if plan is not None:
            listener.accept = _accepting(listener.accept, plan)
