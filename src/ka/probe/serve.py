"""``ka probe --serve PORT``: a far end that accepts connections and keeps them open, idle.

It never sends a byte and never turns keepalive on, so the only packets on an idle connection
are the probing side's; payload that arrives is read and dropped. A connection ends when its
peer closes or resets it, or after ``hold`` seconds without payload: the far end of a flow that a
middlebox forgot never hears the probe's closing reset (the middlebox drops it too), and would
otherwise be held for ever.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections.abc import Callable

__all__ = ["HOLD", "listener", "serve"]

#: Seconds a ``serve`` connection is held without payload (``ka probe --serve --hold``): longer
#: than any ``--max`` a probe is likely to use.
HOLD = 7200.0
#: Seconds ``serve`` stops accepting after running out of descriptors (or kernel memory).
ACCEPT_PAUSE = 0.5
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def listener(port: int, host: str | None = None, backlog: int = 1024) -> socket.socket:
    """A listening socket on ``host`` (default: every address, IPv6 and IPv4 where the system
    allows both) and ``port`` (0: any free port)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, not {port!r}")
    if host is None and socket.has_dualstack_ipv6():
        return socket.create_server(
            ("::", port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True
        )
    family = socket.AF_INET6 if host is not None and ":" in host else socket.AF_INET
    return socket.create_server((host or "0.0.0.0", port), family=family, backlog=backlog)


def serve(
    sock: socket.socket,
    *,
    hold: float = HOLD,
    on_change: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Hold every connection ``sock`` accepts until its peer ends it or it has carried no payload
    for ``hold`` seconds; runs until interrupted (KeyboardInterrupt, let through after every
    connection is closed). ``on_change`` gets the number held after each change. Out of
    descriptors (EMFILE), it keeps what it holds and pauses accepting for ``ACCEPT_PAUSE``
    seconds at a time: new connections wait in the listen queue."""
    if not hold > 0:
        raise ValueError(f"hold must be a positive number of seconds, not {hold!r}")
    selector = selectors.DefaultSelector()
    held: dict[int, tuple[socket.socket, float]] = {}  # fd -> (connection, last payload)
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)

    resume_at: float | None = None  # while out of descriptors: when to accept again

    def drop(fd: int) -> None:
        conn, _ = held.pop(fd)
        selector.unregister(conn)
        conn.close()

    try:
        while True:
            changed = False
            timeout = min(60.0, hold / 4)
            if resume_at is not None:
                left = resume_at - clock()
                if left <= 0:
                    selector.register(sock, selectors.EVENT_READ)
                    resume_at = None
                else:
                    timeout = min(timeout, left)
            for key, _ in selector.select(timeout=timeout):
                if key.fileobj is sock:
                    try:
                        conn, _ = sock.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    except OSError as exc:
                        if exc.errno not in _OUT_OF_DESCRIPTORS:
                            raise
                        # The held connections stay; new ones wait in the listen queue until a
                        # descriptor frees up (ending here would drop every flow being probed).
                        selector.unregister(sock)
                        resume_at = clock() + ACCEPT_PAUSE
                        continue
                    conn.setblocking(False)
                    held[conn.fileno()] = (conn, clock())
                    selector.register(conn, selectors.EVENT_READ)
                    changed = True
                    continue
                conn = held[key.fd][0]
                try:
                    if conn.recv(65536):
                        held[key.fd] = (conn, clock())
                        continue
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    pass
                drop(key.fd)
                changed = True
            now = clock()
            for fd in [fd for fd, (_, last) in held.items() if now - last > hold]:
                drop(fd)
                changed = True
            if changed and on_change is not None:
                on_change(len(held))
    finally:
        for conn, _ in held.values():
            conn.close()
        selector.close()
