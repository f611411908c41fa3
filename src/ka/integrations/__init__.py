"""A keepalive policy in the shapes client libraries take; none of them is a dependency of ka.

This module needs no library: it turns a ``KeepAlive`` into plain values.

- ``socket_options(policy)``: ``(level, option, value)`` triples, what urllib3, requests, httpx,
  httpcore and many others take as ``socket_options``.
- ``redis_options(policy)``: ``socket_keepalive`` / ``socket_keepalive_options`` for redis-py.
- ``libpq_options(policy)`` / ``libpq_conninfo(policy)``: libpq's ``keepalives*`` and
  ``tcp_user_timeout`` connection keywords (psycopg, psycopg2, SQLAlchemy ``connect_args``).
- ``postgres_server_settings(policy)`` / ``postgres_options(policy)``: the server's
  ``tcp_keepalives_*`` settings for its end of the connection (asyncpg ``server_settings``,
  libpq ``options``).

The submodules build library objects and import their library when imported themselves:
``ka.integrations.urllib3``, ``.requests``, ``.httpx``, ``.aiohttp``.
"""

from __future__ import annotations

import socket

from .._options import SOCKET_NUMBERS, Option, spec_steps, user_timeout_value
from ..policy import KeepAlive, require_policy

__all__ = [
    "SocketOption",
    "libpq_conninfo",
    "libpq_options",
    "postgres_options",
    "postgres_server_settings",
    "redis_options",
    "socket_options",
]

SocketOption = tuple[int, int, int]


def socket_options(policy: KeepAlive) -> list[SocketOption]:
    """The policy as ``(level, option, value)`` triples for this platform, for ``setsockopt``.

    Seconds for idle and interval, probes for count; the user timeout is Linux
    ``TCP_USER_TIMEOUT`` (ms), macOS ``TCP_RXT_CONNDROPTIME`` (s, rounded up) or Windows
    ``TCP_MAXRTMS`` (ms). Idle is ``TCP_KEEPALIVE`` on macOS and ``TCP_KEEPIDLE`` elsewhere;
    fields the policy leaves as None are left out; ``SO_KEEPALIVE`` comes first. Windows builds
    older than 10 1709 refuse ``TCP_KEEPIDLE`` (and older ones ``TCP_MAXRTMS``): use
    ``ka.apply`` on the socket there, which falls back to ``SIO_KEEPALIVE_VALS``/``TCP_MAXRT``.
    """
    policy = require_policy(policy)
    triples: list[SocketOption] = []
    for option, value in spec_steps(policy._spec):
        numbers = SOCKET_NUMBERS[option]
        if numbers is None:
            raise ValueError(
                f"{option.system_name} is not available on this platform, so {policy!r} cannot be "
                "expressed as socket options"
            )
        if option is Option.USER_TIMEOUT:
            value = user_timeout_value(value)
        triples.append((numbers[0], numbers[1], value))
    return triples


def redis_options(policy: KeepAlive) -> dict[str, object]:
    """``redis.Redis(**redis_options(policy))``: keyword arguments for redis-py (sync and asyncio).

    ``socket_keepalive_options`` maps ``IPPROTO_TCP`` option numbers to values; it is always
    given, so redis-py's own defaults (idle 30, interval 5, 3 probes in redis-py 6+) do not mix
    into the policy. A disabled policy gives ``socket_keepalive=False``.
    """
    policy = require_policy(policy)
    if not policy.enabled:
        if policy.user_timeout_ms is not None:
            raise ValueError(
                f"{policy!r} cannot be given to redis-py: it sets socket options only with "
                "socket_keepalive=True, so a user timeout needs an enabled policy"
            )
        return {"socket_keepalive": False, "socket_keepalive_options": {}}
    tcp = {option: value for level, option, value in socket_options(policy) if level == socket.IPPROTO_TCP}
    return {"socket_keepalive": True, "socket_keepalive_options": tcp}


_LIBPQ_NAMES = {
    Option.IDLE: "keepalives_idle",
    Option.INTERVAL: "keepalives_interval",
    Option.COUNT: "keepalives_count",
    Option.USER_TIMEOUT: "tcp_user_timeout",
    Option.KEEPALIVE: "keepalives",
}


def libpq_options(policy: KeepAlive) -> dict[str, int]:
    """libpq connection keywords: ``psycopg.connect(dsn, **libpq_options(policy))``.

    ``keepalives`` (1/0), ``keepalives_idle`` and ``keepalives_interval`` (seconds),
    ``keepalives_count`` (probes) and ``tcp_user_timeout`` (milliseconds, libpq 12+); fields the
    policy leaves as None are left out, so libpq keeps the system's values.
    """
    policy = require_policy(policy)
    fields = spec_steps(policy._spec)  # "keepalives" first, as libpq's documentation lists them
    return {_LIBPQ_NAMES[option]: value for option, value in fields}


def libpq_conninfo(policy: KeepAlive) -> str:
    """The same keywords as a conninfo fragment, ``"keepalives=1 keepalives_idle=60 ..."``, to
    append to a DSN string."""
    return " ".join(f"{name}={value}" for name, value in libpq_options(policy).items())


_POSTGRES_SERVER_NAMES = {
    Option.IDLE: "tcp_keepalives_idle",
    Option.INTERVAL: "tcp_keepalives_interval",
    Option.COUNT: "tcp_keepalives_count",
    Option.USER_TIMEOUT: "tcp_user_timeout",
}


def postgres_server_settings(policy: KeepAlive) -> dict[str, str]:
    """PostgreSQL server settings for the server's end of one connection (seconds, probes, ms).

    ``asyncpg.connect(..., server_settings=postgres_server_settings(policy))``; with libpq,
    ``options="-c tcp_keepalives_idle=60 ..."``. PostgreSQL turns SO_KEEPALIVE on for every TCP
    connection itself, so a disabled policy cannot be expressed (``ValueError``).
    """
    policy = require_policy(policy)
    if not policy.enabled:
        raise ValueError(
            f"{policy!r} cannot be a PostgreSQL server setting: the server always enables keepalive"
        )
    return {
        _POSTGRES_SERVER_NAMES[option]: str(value)
        for option, value in spec_steps(policy._spec)
        if option is not Option.KEEPALIVE
    }


def postgres_options(policy: KeepAlive) -> str:
    """The server settings as libpq's ``options`` value: ``"-c tcp_keepalives_idle=60 ..."``."""
    return " ".join(f"-c {name}={value}" for name, value in postgres_server_settings(policy).items())
