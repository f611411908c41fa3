"""hypercorn with a keepalive policy on its listening sockets (checked against Hypercorn 0.18.0).

From the shell, hypercorn's own options plus ``--keepalive-policy`` (default: ``keepalive_policy``
in a hypercorn config file (``-c file:conf.py``, ``-c python:module``, ``-c conf.toml``), else
``KA_POLICY``)::

    python -m ka.integrations.hypercorn app:app --bind 0.0.0.0:8000 -w 4 --keepalive-policy within=30s
    KA_POLICY="idle=60 interval=10 count=5" python -m ka.integrations.hypercorn app:app -w 4

From code, this ``Config`` in place of hypercorn's::

    config = ka.integrations.hypercorn.Config()
    config.bind = ["0.0.0.0:8000"]
    config.keepalive_policy = "idle=60 interval=10 count=5"     # or a ka.KeepAlive; None: KA_POLICY
    asyncio.run(hypercorn.asyncio.serve(app, config))           # or hypercorn.trio.serve

How: hypercorn makes its sockets in ``Config.create_sockets()`` (bound, not yet listening: its
asyncio and trio workers call ``listen()``), in the parent before any worker process starts.
``Config.create_sockets`` gives every TCP socket the policy there, so each accepted socket in every
worker inherits it (Linux, FreeBSD). ``fd://N`` sockets (``ka listen``) get it too, but connections
already queued on one keep the values they were made with (under ``ka listen`` that is the policy).
Unix and QUIC (UDP) sockets are left alone. One line per socket goes to hypercorn's error log at
info level (``ka: keepalive idle=60 interval=10 count=5 on 0.0.0.0:8000, inherited by accepted
connections``).

Per-accept is not possible: where accepted sockets do not inherit the listener's options (macOS,
Windows) ``create_sockets`` raises ``NotImplementedError``. hypercorn accepts inside
``asyncio.start_server`` / trio's ``SocketListener`` / uvloop with a callback of its own, in worker
processes that receive the sockets pickled, so no user code runs between accept and its
``TCPServer``. Without ka's glue, ``ka listen ADDR -- hypercorn --bind fd://3 app:app`` does the
same on Linux.

ka does not depend on hypercorn: importing this module imports it.
"""

from __future__ import annotations

import argparse
import importlib
import socket
import sys
from typing import Any

import hypercorn.config

from ..policy import KeepAlive, resolve_policy
from ..server import PER_ACCEPT, Platform, prepare_listener

__all__ = ["Config", "main"]

PROG = "python -m ka.integrations.hypercorn"


class _CommandLine:
    """``--keepalive-policy`` as given to ``main`` in this process (None: the config's, or KA_POLICY)."""

    policy: str | None = None


class Config(hypercorn.config.Config):
    """``hypercorn.config.Config`` plus ``keepalive_policy`` (a ``KeepAlive``, a policy string, or
    None for ``KA_POLICY``) and ``keepalive_platform`` (a ``ka.server.Platform`` to simulate
    another OS); both may be set in a hypercorn config file too."""

    keepalive_policy: KeepAlive | str | None = None
    keepalive_platform: Platform | None = None

    def create_sockets(self) -> hypercorn.config.Sockets:
        given = _CommandLine.policy  # the command line wins over a config file (hypercorn's rule)
        policy = resolve_policy(given if given is not None else self.keepalive_policy)
        platform = Platform.check(self.keepalive_platform)
        if platform.mode == PER_ACCEPT:
            raise NotImplementedError(
                f"on {platform.name} accepted sockets do not inherit a listener's keepalive options, and "
                "hypercorn has no hook between accept and its connection handler: ka cannot give its "
                "connections a policy there"
            )
        sockets = super().create_sockets()
        try:
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    prepare_listener(sock, policy, platform=platform)
                    self._log_listener(sock, policy)
        except BaseException:
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]:
                sock.close()
            raise
        return sockets

    def _log_listener(self, sock: socket.socket, policy: KeepAlive) -> None:
        """One info line in hypercorn's error log (``hypercorn.error``), as ``ka listen`` prints."""
        # A logger made for this line, not ``self.log``: that one is cached on the config, and a
        # config holding it no longer pickles for the worker processes.
        logger = getattr(self.logger_class(self), "error_logger", None)
        if logger is not None:
            host, port = sock.getsockname()[:2]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            logger.info("ka: keepalive %s on %s, inherited by accepted connections", policy, where)


class _Parser(argparse.ArgumentParser):
    """hypercorn's parser, named for this module and with ``--keepalive-policy``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["prog"] = PROG
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--keepalive-policy",
            default=None,
            metavar="POLICY",
            help="TCP keepalive policy for accepted connections: 'idle=60 interval=10 count=5', "
            "'within=30s' (default: keepalive_policy in the config file, else the KA_POLICY "
            "environment variable)",
        )

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        if parsed.keepalive_policy is not None:
            try:
                resolve_policy(parsed.keepalive_policy)  # a usage error now, before anything starts
            except ValueError as exc:
                self.error(f"--keepalive-policy: {exc}")
        _CommandLine.policy = parsed.keepalive_policy
        return parsed


def main(argv: list[str] | None = None) -> int:
    """``python -m ka.integrations.hypercorn``: hypercorn's command line with this ``Config`` and
    ``--keepalive-policy``."""
    cli: Any = importlib.import_module("hypercorn.__main__")
    original_config, original_argparse = cli.Config, cli.argparse
    cli.Config = Config  # hypercorn's _load_config builds its Config through this name
    # hypercorn builds its parser with argparse.ArgumentParser(): ours, through a stand-in module.
    cli.argparse = type(sys)("argparse")
    cli.argparse.__dict__.update(vars(argparse))
    cli.argparse.ArgumentParser = _Parser
    try:
        return int(cli.main(argv if argv is not None else sys.argv[1:]))
    except ValueError as exc:  # a bad or missing policy, found before any socket is made
        print(f"ka.integrations.hypercorn: {exc}", file=sys.stderr)
        return 2
    finally:
        cli.Config, cli.argparse = original_config, original_argparse


if __name__ == "__main__":
    from ka.integrations.hypercorn import main as canonical_main

    sys.exit(canonical_main())
