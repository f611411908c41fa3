"""Smoke test for an installed wheel, on any OS: run from outside the source tree.

Checks that ``import ka`` is the installed copy with the compiled core, built without debug
information (its size under MAX_EXTENSION_BYTES), that a free-threaded
Python keeps its GIL off after the import, and that a real loopback connection takes a policy and
reads it back the same way through the compiled core, the pure-Python twin and the stdlib.
Usage: ``python tools/test_wheel.py`` (exit status 0 on success).
"""

from __future__ import annotations

import array
import socket
import sys
import sysconfig
from pathlib import Path

# The compiled core without debug info is 130-160 KB on x86_64 Linux (891 KB with it); a module
# over this bound was built with -g (or without the setup.py flags that drop it).
MAX_EXTENSION_BYTES = 400_000


def _stdlib_values(sock: socket.socket) -> list[int | None]:
    """(enabled, idle, interval, count) through socket.getsockopt; None where the stdlib lacks it."""
    idle_name = "TCP_KEEPALIVE" if sys.platform == "darwin" else "TCP_KEEPIDLE"
    values: list[int | None] = [1 if sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) else 0]
    for name in (idle_name, "TCP_KEEPINTVL", "TCP_KEEPCNT"):
        number = getattr(socket, name, None)
        values.append(None if number is None else sock.getsockopt(socket.IPPROTO_TCP, number))
    return values


def main() -> int:
    import ka
    from ka import _ka_c, _ka_py

    where = Path(ka.__file__).resolve()
    prefix = Path(sys.prefix).resolve()
    assert ka.IMPLEMENTATION == "c", f"ka.IMPLEMENTATION is {ka.IMPLEMENTATION!r}, expected 'c'"
    assert prefix in where.parents, f"ka was imported from {where}, not from the environment {prefix}"
    print(f"ka {ka.__version__} from {where.parent} ({_ka_c.__file__})")
    size = Path(_ka_c.__file__).stat().st_size
    assert size <= MAX_EXTENSION_BYTES, (
        f"the compiled core is {size} bytes, over {MAX_EXTENSION_BYTES}: built with debug information?"
    )
    print(f"compiled core: {size} bytes (bound {MAX_EXTENSION_BYTES})")

    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        gil = sys._is_gil_enabled()  # type: ignore[attr-defined,unused-ignore]
        assert not gil, "importing ka._ka_c re-enabled the GIL: the module is not marked free-threading safe"
        print("free-threaded Python: the GIL stays disabled after import")

    caps = ka.capabilities()
    print(caps)
    policy = ka.KeepAlive(idle=42, interval=7, count=3 if caps.count else None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with client, accepted:
        ka.apply(client, policy)
        compiled = _ka_c.read(client)
        twin = _ka_py.read(client)
        assert compiled == twin, f"the compiled core read {compiled}, the twin {twin}"
        assert compiled[0] == 1, compiled
        expected = [1, 42, 7, 3 if caps.count else -1]
        for k, stdlib in enumerate(_stdlib_values(client)):
            if stdlib is not None:
                assert stdlib == expected[k], f"getsockopt: {stdlib} in field {k}, expected {expected[k]}"
            # -1: this Windows build cannot read the value back (SIO_KEEPALIVE_VALS fallback)
            assert compiled[k] in (expected[k], -1), (k, compiled)

        fds = array.array("q" if sys.platform == "win32" else "i", [client.fileno(), accepted.fileno()])
        result = ka.apply_many(fds, ka.KeepAlive(idle=50, interval=5, count=None), threads=2)
        assert result.ok and result.applied == 2, result
        columns = ka.read_many([client, accepted])
        assert columns.ok and list(columns.enabled) == [1, 1], columns
        assert set(columns.idle) <= {50, -1} and set(columns.interval) <= {5, -1}, columns

    closed = socket.socket()
    fd = closed.fileno()
    closed.close()
    failed = ka.apply_many([fd], policy)
    assert failed.applied == 0 and len(failed.failed) == 1 and failed.failed[0].errno != 0, failed
    print(f"a closed descriptor fails as expected: {failed.failed[0]}")
    print("wheel smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
