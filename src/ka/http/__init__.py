"""HTTP Keep-Alive: the ``Keep-Alive`` and ``Connection`` headers, and connection persistence.

HTTP Keep-Alive (persistent connections) is about reusing one TCP connection for many requests;
TCP keepalive (``ka.KeepAlive``) is about finding out that the peer of an idle connection is gone.
This module parses and formats ``Keep-Alive: timeout=5, max=1000``, applies the persistence rules
of RFC 9112 section 9.3. The TCP keepalive policies for HTTP and middlebox idle timeouts are
``ka.KeepAlive.for_http_idle_timeout`` and ``ka.KeepAlive.for_middlebox``.

Header values are ``str`` (or ``bytes``, decoded as ISO-8859-1, the octets HTTP carries); several
header lines of one field may be passed as a list and count as one comma-joined value (RFC 9110
section 5.3). Parsing is lenient by default (malformed parts are skipped and reported, never
raised); ``strict=True`` raises ``HeaderError`` naming the offending part.
"""

from __future__ import annotations

from .grammar import (
    DELTA_SECONDS_MAX,
    HeaderError,
    KeepAliveHeader,
    format_keep_alive,
    parse_connection,
    parse_keep_alive,
)
from .persistence import ConnectionDecision, decide_connection, is_persistent

__all__ = [
    "DELTA_SECONDS_MAX",
    "ConnectionDecision",
    "HeaderError",
    "KeepAliveHeader",
    "decide_connection",
    "format_keep_alive",
    "is_persistent",
    "parse_connection",
    "parse_keep_alive",
]

# Shown (in tracebacks, reprs and the documentation) under the name they are imported by.
for _cls in (HeaderError, KeepAliveHeader, ConnectionDecision):
    _cls.__module__ = __name__
del _cls
