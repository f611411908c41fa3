"""uvicorn with a keepalive policy on its listening socket (checked against uvicorn 0.54.0).

From the shell, uvicorn's own options plus ``--keepalive-policy`` (default: ``KA_POLICY``)::

    KA_POLICY="idle=60 interval=10 count=5" python -m ka.integrations.uvicorn app:app --workers 4
    python -m ka.integrations.uvicorn app:app --reload --keepalive-policy within=30s

From code, ``run`` takes ``uvicorn.run``'s arguments plus ``keepalive`` (a ``KeepAlive``, a policy
string, or None for ``KA_POLICY``)::

    ka.integrations.uvicorn.run("app:app", host="0.0.0.0", port=8000, workers=4, keepalive=policy)

or build the ``Config`` yourself and hand its socket to ``uvicorn.Server``::

    config = ka.integrations.uvicorn.Config("app:app", port=8000, keepalive=policy)
    uvicorn.Server(config).run(sockets=[config.bind_socket()])

How: uvicorn binds the socket in ``Config.bind_socket()`` and asyncio calls ``listen()`` when
serving starts, so ``Config.bind_socket`` gives the socket the policy in between: on Linux and
FreeBSD every accepted socket inherits it, in every worker (``--workers N`` and ``--reload`` pass
that socket to their processes). Where accepted sockets do not inherit (macOS, Windows) the listener
is left alone and the HTTP protocol class is replaced by a subclass whose ``connection_made``
applies the policy to each accepted socket first (any event loop: asyncio or uvloop). One info line
through uvicorn's logger (``uvicorn.error``) says which socket got which policy. With
``--fd`` (a socket from ``ka listen`` or systemd, already listening) the policy is applied to it
too, and connections already queued get it when accepted. Unix sockets (``--uds``) carry no TCP
keepalive: refused. Without ka's glue, ``ka listen ADDR -- uvicorn --fd 3 app:app`` does the
same on Linux.

ka does not depend on uvicorn: importing this module imports it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import ChangeReload, Multiprocess

from ..policy import KeepAlive, resolve_policy
from ..server import PER_ACCEPT, ListenerPlan, Platform, prepare_listener
from ._serving import keepalive_protocol

__all__ = ["Config", "main", "run"]

STARTUP_FAILURE = 3  # uvicorn.server.STARTUP_FAILURE


class Config(uvicorn.Config):
    """``uvicorn.Config`` plus ``keepalive`` (a ``KeepAlive``, a policy string, or None for
    ``KA_POLICY``; checked here) and ``keepalive_platform`` (a ``ka.server.Platform`` to simulate
    another OS). Use its ``bind_socket()``: the socket comes back bound, with the policy, not
    yet listening (or, with ``fd=``, the inherited listener with the policy).
    """

    http_protocol_class: type[asyncio.Protocol]  # uvicorn's own type; load() may wrap the class

    def __init__(
        self,
        app: Any,
        *,
        keepalive: KeepAlive | str | None = None,
        keepalive_platform: Platform | None = None,
        **kwargs: Any,
    ) -> None:
        self.keepalive: KeepAlive = resolve_policy(keepalive)
        self.keepalive_platform: Platform = Platform.check(keepalive_platform)
        self.keepalive_pending: int = 0  # connections queued on an inherited listener before the policy
        super().__init__(app, **kwargs)
        if self.uds is not None:
            raise ValueError(
                f"uds={self.uds!r} is a Unix socket: TCP keepalive applies to TCP only; give host and "
                "port (or fd) to ka.integrations.uvicorn, or use uvicorn.Config"
            )

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        plan = prepare_listener(sock, self.keepalive, platform=self.keepalive_platform)
        host, port = sock.getsockname()[:2]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        how = "inherited by accepted connections" if plan.inherits else "applied to each accepted connection"
        # uvicorn's own logger, as uvicorn reports its socket ("Uvicorn running on ...").
        logging.getLogger("uvicorn.error").info("ka: keepalive %s on %s, %s", plan.policy, where, how)
        # Saved on the config: worker processes get a pickled copy and apply to as many.
        self.keepalive_pending = plan.pending
        return sock

    def load(self) -> None:
        super().load()
        platform = self.keepalive_platform
        plan = ListenerPlan(None, self.keepalive, platform, platform.mode, self.keepalive_pending)
        if plan.mode == PER_ACCEPT or plan.pending:
            self.http_protocol_class = keepalive_protocol(self.http_protocol_class, plan)


def run(
    app: Any,
    *,
    keepalive: KeepAlive | str | None = None,
    keepalive_platform: Platform | None = None,
    **kwargs: Any,
) -> None:
    """``uvicorn.run(app, **kwargs)`` whose listening socket carries ``keepalive`` (None: the
    ``KA_POLICY`` environment variable), in one process, under ``workers=N`` or ``reload=True``."""
    app_dir = kwargs.pop("app_dir", None)
    if app_dir is not None:
        sys.path.insert(0, app_dir)
    config = Config(app, keepalive=keepalive, keepalive_platform=keepalive_platform, **kwargs)
    if (config.reload or config.workers > 1) and not isinstance(app, str):
        raise ValueError("reload and workers need the application as an import string ('module:app')")
    server = uvicorn.Server(config=config)
    sock = config.bind_socket()
    try:
        if config.should_reload:
            ChangeReload(config, target=server.run, sockets=[sock]).run()
        elif config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if not server.started and not config.should_reload and config.workers == 1:
        sys.exit(STARTUP_FAILURE)


def main(argv: list[str] | None = None) -> None:
    """``python -m ka.integrations.uvicorn``: uvicorn's command line with ``run`` behind it and
    ``--keepalive-policy TEXT`` (default: ``KA_POLICY``)."""
    import importlib

    import click

    # The module itself: the package's ``uvicorn.main`` attribute is the command, not the module.
    cli: Any = importlib.import_module("uvicorn.main")

    def callback(keepalive_policy: str | None, **options: Any) -> None:
        try:
            policy = resolve_policy(keepalive_policy)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        original = cli.run
        # uvicorn's command calls uvicorn.main.run with the options it parsed: ours, with the policy.
        cli.run = lambda app, **kw: run(app, keepalive=policy, **kw)
        try:
            assert cli.main.callback is not None
            cli.main.callback(**options)
        finally:
            cli.run = original

    option = click.Option(
        ["--keepalive-policy"],
        envvar="KA_POLICY",
        default=None,
        help="TCP keepalive policy for accepted connections: 'idle=60 interval=10 count=5', "
        "'within=30s' (default: the KA_POLICY environment variable).",
    )
    command = click.Command(
        "ka-uvicorn",
        params=[*cli.main.params, option],
        callback=callback,
        context_settings=cli.main.context_settings,
        help=cli.main.help,
    )
    command.main(args=argv, prog_name="python -m ka.integrations.uvicorn")


if __name__ == "__main__":
    # The canonical module, not __main__: worker processes unpickle ka.integrations.uvicorn.Config.
    from ka.integrations.uvicorn import main as canonical_main

    canonical_main()
