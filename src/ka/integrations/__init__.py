"""A keepalive policy in the shapes client libraries take; none of them is a dependency of ka.

This module needs no library: it turns a ``KeepAlive`` into plain values.

- ``policy.setsockopt_calls()`` (a ``KeepAlive`` method): ``(level, option, value)`` triples,
  what urllib3, requests, httpx, httpcore and many others take as ``socket_options``.
- ``redis_options(policy)``: ``socket_keepalive`` / ``socket_keepalive_options`` for redis-py.
- ``libpq_options(policy)`` / ``libpq_conninfo(policy, dsn)``: libpq's ``keepalives*`` and
  ``tcp_user_timeout`` connection keywords (psycopg, psycopg2, SQLAlchemy ``connect_args``).
- ``postgres_server_settings(policy)`` / ``postgres_options(policy)``: the server's
  ``tcp_keepalives_*`` settings for its end of the connection (asyncpg ``server_settings``,
  libpq ``options``), checked against PostgreSQL's ranges.
- ``create_connection(address, policy)``: a connected socket carrying the policy, for libraries
  that take one (``sock=``).

The submodules fit one library each: ``ka.integrations.urllib3``, ``.requests``, ``.httpx``,
``.aiohttp``, ``.asyncpg``, ``.kombu`` (Celery too), ``.pika``, ``.kafka``, ``.paramiko``,
``.asyncssh``, ``.pymongo``. Those that build the library's objects import it when imported.
The documentation has a page per library, and one for libraries with no hook.
"""

from __future__ import annotations

import datetime
import numbers
import socket
from typing import Any

from .._options import Option
from ..policy import KeepAlive, require_policy
from ..units import microseconds

__all__ = [
    "SocketOption",
    "create_connection",
    "libpq_conninfo",
    "libpq_options",
    "postgres_options",
    "postgres_server_settings",
    "redis_options",
    "with_policy",
]

#: One ``setsockopt`` call as client libraries take it: ``(level, option, value)``.
SocketOption = tuple[int, int, int]


def redis_options(policy: KeepAlive) -> dict[str, Any]:
    """``redis.Redis(**redis_options(policy))``: keyword arguments for redis-py (sync and asyncio).

    ``socket_keepalive_options`` maps ``IPPROTO_TCP`` option numbers to values; it is always
    given, so redis-py's own defaults do not mix into the policy. Those defaults arrived in redis-py
    8.0.0: ``socket_keepalive=True`` with idle 30 s, interval 5 s, 3 probes. Releases 5.2.1 to
    7.1.0 default to ``socket_keepalive=False`` (the system's keepalive stays off). Fields the
    policy leaves as None keep the system's values under every release. A disabled policy gives
    ``socket_keepalive=False``. Checked against redis-py 7.1.0 and 8.1.0.
    """
    policy = require_policy(policy)
    if not policy.enabled:
        if policy.user_timeout_ms is not None:
            raise ValueError(
                f"{policy!r} cannot be given to redis-py: it sets socket options only with "
                "socket_keepalive=True, so a user timeout needs an enabled policy"
            )
        return {"socket_keepalive": False, "socket_keepalive_options": {}}
    tcp = {option: value for level, option, value in policy.setsockopt_calls() if level == socket.IPPROTO_TCP}
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
    fields = policy.spec.steps()  # "keepalives" first, as libpq's documentation lists them
    return {_LIBPQ_NAMES[option]: value for option, value in fields}


_URI_PREFIXES = ("postgresql://", "postgres://")


def libpq_conninfo(policy: KeepAlive, dsn: str = "") -> str:
    """``dsn`` with the same keywords added, in the DSN's own form; without ``dsn``, the keywords
    alone as a keyword/value fragment, ``"keepalives=1 keepalives_idle=60 ..."``.

    A keyword/value DSN (``"host=db dbname=app"``) gets ``" keepalives=1 ..."`` appended; a URI
    (``postgresql://`` or ``postgres://``) gets query parameters (``?keepalives=1&...``, or
    ``&...`` after its own). Appended keywords come last, and libpq takes the last value given for
    a keyword in either form, so the policy wins over values already in the DSN. Never append the
    bare fragment to a URI yourself: libpq reads it as part of the database name.
    """
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be a libpq connection string (str), not {type(dsn).__name__} {dsn!r}")
    keywords = libpq_options(policy)
    if dsn.startswith(_URI_PREFIXES):
        if "#" in dsn:
            raise ValueError(f"{dsn!r} has a fragment ('#'), which a libpq connection URI cannot carry")
        query = "&".join(f"{name}={value}" for name, value in keywords.items())
        separator = "" if dsn.endswith(("?", "&")) else "&" if "?" in dsn else "?"
        return f"{dsn}{separator}{query}"
    fragment = " ".join(f"{name}={value}" for name, value in keywords.items())
    return f"{dsn.rstrip()} {fragment}" if dsn.strip() else fragment


_POSTGRES_SERVER_NAMES = {
    Option.IDLE: "tcp_keepalives_idle",
    Option.INTERVAL: "tcp_keepalives_interval",
    Option.COUNT: "tcp_keepalives_count",
    Option.USER_TIMEOUT: "tcp_user_timeout",
}
# PostgreSQL's own range for each setting (guc_tables.c; pg_settings.max_val, checked by the
# tests against the server they run): 0 means "the server's operating-system default".
POSTGRES_SETTING_MAX = 2147483647


def _server_value(field: str, value: object, unit_us: int) -> int:
    """A duration in seconds as a whole number of ``unit_us`` microseconds, rounded up, checked
    against PostgreSQL's range (not this client's platform)."""
    # Rounded to the microsecond first, as KeepAlive does, so 0.1 * 3 s counts as 300 ms, not 301.
    us = microseconds(field, value, check_sign=False)
    zero_allowed = field == "user_timeout"
    units = -(-us // unit_us)
    if units < 0 or (units == 0 and not zero_allowed) or units > POSTGRES_SETTING_MAX:
        unit = {"user_timeout": "milliseconds", "count": "probes"}.get(field, "seconds")
        low = 0 if zero_allowed else 1
        raise ValueError(
            f"{field}={value!r} is out of range: the PostgreSQL server setting "
            f"{_POSTGRES_SERVER_NAMES[_SERVER_FIELDS[field]]} takes {low} to {POSTGRES_SETTING_MAX} {unit}"
        )
    return units


_SERVER_FIELDS = {
    "idle": Option.IDLE,
    "interval": Option.INTERVAL,
    "count": Option.COUNT,
    "user_timeout": Option.USER_TIMEOUT,
}


def postgres_server_settings(
    policy: KeepAlive | None = None,
    *,
    idle: float | datetime.timedelta | None = None,
    interval: float | datetime.timedelta | None = None,
    count: int | None = None,
    user_timeout: float | datetime.timedelta | None = None,
) -> dict[str, str]:
    """PostgreSQL server settings for the server's end of one connection (seconds, probes, ms).

    ``asyncpg.connect(..., server_settings=postgres_server_settings(policy))``; with libpq,
    ``options=postgres_options(policy)``. Give a ``KeepAlive``, or the values as keywords: these
    are checked against PostgreSQL's ranges (1 to 2147483647 seconds or probes; ``user_timeout``
    0 to 2147483647 ms, rounded up to the millisecond, 0 for the system's behaviour), never against
    this client's platform, so a client whose OS has no user timeout (FreeBSD, OpenBSD, where
    ``KeepAlive(user_timeout=...)`` is refused) can give a Linux server a ``tcp_user_timeout``,
    and any client values beyond its own ranges. Whether the
    server's OS takes a value is the server's business: PostgreSQL logs and ignores a setting its
    platform refuses. PostgreSQL turns SO_KEEPALIVE on for every TCP connection itself, so a
    disabled policy cannot be expressed (``ValueError``).
    """
    keywords = {"idle": idle, "interval": interval, "count": count, "user_timeout": user_timeout}
    given = {field: value for field, value in keywords.items() if value is not None}
    if policy is not None:
        if given:
            raise TypeError(f"give a policy or keyword values, not both: got {policy!r} and {sorted(given)}")
        policy = require_policy(policy)
        if not policy.enabled:
            raise ValueError(
                f"{policy!r} cannot be a PostgreSQL server setting: the server always enables keepalive"
            )
        return {
            _POSTGRES_SERVER_NAMES[option]: str(value)
            for option, value in policy.spec.steps()
            if option is not Option.KEEPALIVE
        }
    probes: object = count  # typed int, checked as whatever a caller passed
    if probes is not None and (isinstance(probes, bool) or not isinstance(probes, numbers.Integral)):
        raise TypeError(f"count must be a whole number of probes (int), not {type(count).__name__} {count!r}")
    if not given:
        raise TypeError("give a policy or at least one of idle, interval, count, user_timeout")
    settings = {}
    for field, value in given.items():
        unit_us = 1000 if field == "user_timeout" else 1_000_000
        settings[_POSTGRES_SERVER_NAMES[_SERVER_FIELDS[field]]] = str(_server_value(field, value, unit_us))
    return settings


def postgres_options(
    policy: KeepAlive | None = None,
    *,
    idle: float | datetime.timedelta | None = None,
    interval: float | datetime.timedelta | None = None,
    count: int | None = None,
    user_timeout: float | datetime.timedelta | None = None,
) -> str:
    """The server settings as libpq's ``options`` value: ``"-c tcp_keepalives_idle=60 ..."``.

    Arguments and checks as ``postgres_server_settings``.
    """
    settings = postgres_server_settings(
        policy, idle=idle, interval=interval, count=count, user_timeout=user_timeout
    )
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


def create_connection(
    address: tuple[str, int],
    policy: KeepAlive,
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """``socket.create_connection(address, timeout, source_address)`` with ``policy`` applied to
    the connected socket, for libraries that take a ready socket (paramiko's ``sock=``).

    ``timeout`` is in seconds and stays set on the socket, as with the stdlib. If the policy
    cannot be applied, the socket is closed and the ``OSError`` (with ``fd`` and ``option``) raised.
    """
    policy = require_policy(policy)
    return with_policy(socket.create_connection(address, timeout, source_address), policy)


def with_policy(sock: socket.socket, policy: KeepAlive) -> socket.socket:
    """``sock``, a socket the caller just made and owns, with ``policy`` applied; if it cannot be
    applied (or anything is raised meanwhile), the socket is closed and the error raised."""
    from .. import apply  # ka's face imports this module: the import waits until first use

    try:
        apply(sock, policy)
    except BaseException:
        sock.close()
        raise
    return sock
