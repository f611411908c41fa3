"""The edges of what a descriptor number may be, for both implementations: descriptor 0 is a
descriptor like any other, and numbers at the 64-bit limits get the error that names them."""

from __future__ import annotations

import array
import json
import re
import socket
import subprocess
import sys
from types import ModuleType

import pytest

import ka

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux option numbers")

# A child whose descriptor 0 (stdin) is a TCP socket: each call on 0 must reach that socket.
ZERO = """
import array, importlib, json, os, socket, sys
import ka
core = importlib.import_module(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
os.dup2(client.fileno(), 0)
client.close()
kernel = socket.socket(fileno=os.dup(0))
TCP = socket.IPPROTO_TCP
def values():
    return [kernel.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
            *(kernel.getsockopt(TCP, o) for o in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL,
                                                  socket.TCP_KEEPCNT, socket.TCP_USER_TIMEOUT))]
core.apply(0, ka.KeepAlive(33, 7, 4, user_timeout=12.5))
out = {"single": values(), "read": list(core.read(0))}
bulk = core.apply_many([0], ka.KeepAlive(21, 3, 2), 1, "syscalls")
read = core.read_many(array.array("i", [0]), 1)
out["bulk"] = [list(bulk.errnos), values()]
out["read_many"] = [list(read.errnos), read.idle[0], read.interval[0], read.count[0]]
print(json.dumps(out))
"""


def test_descriptor_zero_is_applied_to(core: ModuleType) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ZERO, core.__name__],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["single"] == [True, 33, 7, 4, 12500]
    assert out["read"] == [True, 33, 7, 4, 12.5]
    assert out["bulk"] == [[0], [True, 21, 3, 2, 12500]]
    assert out["read_many"] == [[0], 21, 3, 2]


class Fileno:
    def __init__(self, value: int) -> None:
        self.value = value

    def fileno(self) -> int:
        return self.value


INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (INT64_MAX, "c-int"),  # fits the 64 bits an fd is read into, but not a C int
        (INT64_MAX + 1, "range"),  # no descriptor on any platform
        (INT64_MIN, "c-int"),
        (INT64_MIN - 1, "range"),
    ],
)
def test_numbers_at_the_64_bit_edges_get_the_error_that_names_them(
    core: ModuleType, number: int, kind: str
) -> None:
    suffix = " (expected a C int)" if kind == "c-int" else ""

    def expect(message: str) -> str:
        return "^" + re.escape(message + ": not a descriptor number" + suffix) + "$"

    policy = ka.KeepAlive(30)
    with pytest.raises(ValueError, match=expect(f"target is {number}")):
        core.apply(number, policy)
    with pytest.raises(ValueError, match=expect(f"target is {number}")):
        core.read(number)
    with pytest.raises(ValueError, match=expect(f"target.fileno() returned {number}")):
        core.apply(Fileno(number), policy)
    with pytest.raises(ValueError, match=expect(f"targets[1] is {number}")):
        core.apply_many([0, number], policy, 1, "syscalls")
    with pytest.raises(ValueError, match=expect(f"targets[1].fileno() returned {number}")):
        core.read_many([0, Fileno(number)], 1)
    if kind == "c-int":  # a signed 8-byte buffer holds it: the same error, by position
        with pytest.raises(ValueError, match=expect(f"targets[1] is {number}")):
            core.apply_many(array.array("q", [0, number]), policy, 1, "syscalls")


def test_one_second_reads_back_as_one(core: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = pair
    core.apply(client, ka.KeepAlive(1, 1, 1, user_timeout=0.001))
    assert core.read(client) == ka.KeepAliveSettings(True, 1, 1, 1, 0.001)
    assert ka.ReadResult.from_columns(core.read_many([client], 1))[0] == ka.KeepAliveSettings(
        True, 1, 1, 1, 0.001
    )


def test_a_buffer_of_another_shape_is_named(core: ModuleType) -> None:
    np = pytest.importorskip("numpy")
    message = (
        "a buffer of descriptors must be one-dimensional 4- or 8-byte integers (array('i'), array('q'), "
        "numpy int32/int64), not format 'i' with itemsize 4 and 2 dimensions"
    )
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        core.apply_many(np.zeros((2, 2), dtype=np.int32), ka.KeepAlive(30), 1, "syscalls")
