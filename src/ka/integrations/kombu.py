"""kombu and Celery brokers (checked against kombu 5.7.0, py-amqp 5.4.2, celery 5.7.0). ::

    app.conf.broker_transport_options = ka.integrations.kombu.redis_transport_options(policy)
    app.conf.broker_transport_options = ka.integrations.kombu.amqp_transport_options(policy)
    kombu.Connection("redis://...", transport_options=redis_transport_options(policy))

This module needs neither library: it builds plain dictionaries.

**Redis broker.** kombu's Redis channel passes ``socket_keepalive=None`` and
``socket_keepalive_options=None`` to redis-py unless the transport options say otherwise; an
explicit None switches redis-py 8's own defaults (on, 30/5/3) off, so a Celery worker's broker
connections carry no keepalive at all. ``redis_transport_options`` gives both keys.

**AMQP broker (py-amqp, ``amqp://`` / ``pyamqp://``).** py-amqp always turns SO_KEEPALIVE on and
sets its own ``TCP_KEEPIDLE`` 60, ``TCP_KEEPINTVL`` 10, ``TCP_KEEPCNT`` 9 and a ``TCP_USER_TIMEOUT``
of 1000 ms; ``socket_settings`` (a dict of ``IPPROTO_TCP`` option numbers) is laid over those.
``amqp_transport_options`` therefore gives every field: the policy's, and for fields the policy
leaves as None the system's own (``ka.system_defaults()``; user timeout 0, the kernel's default),
so none of py-amqp's values mix in. A disabled policy cannot be expressed (``ValueError``).

**Result backends.** ``rpc://`` talks over a broker connection and takes
``broker_transport_options``. The Redis result backend takes no socket options from Celery's
configuration: ``redis_socket_keepalive=True`` turns SO_KEEPALIVE on with redis-py's defaults
(8.x: 30/5/3; 5.2.1-7.1.0: the system's), and nothing passes ``socket_keepalive_options``. For a
policy there, run ``ka apply --pid`` on the worker (Linux) or set the system defaults.
"""

from __future__ import annotations

import socket
from typing import Any

from .._options import SOCKET_NUMBERS, Option
from ..policy import KeepAlive, require_policy
from ..system import system_defaults
from . import redis_options

__all__ = ["amqp_socket_settings", "amqp_transport_options", "redis_transport_options"]


def redis_transport_options(policy: KeepAlive) -> dict[str, Any]:
    """``transport_options`` (Celery: ``broker_transport_options``) for kombu's Redis transport:
    ``socket_keepalive`` and ``socket_keepalive_options`` as ``ka.integrations.redis_options``."""
    return redis_options(policy)


def amqp_socket_settings(policy: KeepAlive) -> dict[int, int]:
    """py-amqp's ``socket_settings``: ``{IPPROTO_TCP option number: value}`` for every keepalive
    field (seconds, seconds, probes, milliseconds), py-amqp's own defaults replaced.

    Where the platform has no ``TCP_USER_TIMEOUT`` the key is left out (py-amqp then sets its
    own where it can).
    """
    policy = require_policy(policy)
    if not policy.enabled:
        raise ValueError(
            f"{policy!r} cannot be given to py-amqp: it turns SO_KEEPALIVE on for every connection"
        )
    system = system_defaults()
    user_timeout = policy.user_timeout
    if user_timeout is None and SOCKET_NUMBERS[Option.USER_TIMEOUT] is not None:
        user_timeout = 0  # the kernel's default, replacing py-amqp's 1000 ms
    filled = KeepAlive(
        policy.idle if policy.idle is not None else system.idle,
        policy.interval if policy.interval is not None else system.interval,
        policy.count if policy.count is not None else system.count,
        user_timeout=user_timeout,
    )
    return {
        option: value for level, option, value in filled.setsockopt_calls() if level == socket.IPPROTO_TCP
    }


def amqp_transport_options(policy: KeepAlive) -> dict[str, object]:
    """``transport_options`` (Celery: ``broker_transport_options``) for kombu's py-amqp transport."""
    return {"socket_settings": amqp_socket_settings(policy)}
