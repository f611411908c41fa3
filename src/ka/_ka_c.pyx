# cython: language_level=3, freethreading_compatible=True, boundscheck=False, wraparound=False
"""The compiled core of ka: single and bulk apply/read over the C shim in _platform.h.

The pure-Python twin (_ka_py.py) has the same functions with the same results; the tests run
every behaviour against both. Bulk loops run without the GIL and touch no Python object.
Module state is constants only (free-threading safe).
"""

cimport cython
from cpython.array cimport array, clone
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_STRIDES, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_FromDouble
from cpython.long cimport PyLong_AsLongLong
from cpython.ref cimport Py_DECREF, PyObject
from libc.stdint cimport int8_t, int32_t, uint8_t
from libc.string cimport memcpy

import array as _array
import errno
import os
import socket as _socket

from .errors import buffer_error, option_error, policy_error, target_error, targets_error
from .policy import KeepAlive
from .protocol import AppliedColumns, ReadColumns
from .results import KeepAliveSettings

cdef extern from "_platform.h" nogil:
    ctypedef long long ka_fd_t
    ctypedef struct ka_policy:
        int enable
        int idle
        int interval
        int count
        int user_timeout_ms
    ctypedef struct ka_values:
        int enabled
        int idle
        int interval
        int count
        int user_timeout_ms
    int KA_PLATFORM
    int KA_MAX_IDLE
    int KA_MAX_INTERVAL
    int KA_MAX_COUNT
    int KA_MAX_USER_TIMEOUT_MS
    int KA_HAVE_IDLE
    int KA_HAVE_INTERVAL
    int KA_HAVE_COUNT
    int KA_HAVE_USER_TIMEOUT
    int ka_apply_one(ka_fd_t fd, const ka_policy *p, int *option)
    int ka_read_one(ka_fd_t fd, ka_values *v, int *option)
    long long ka_first_bad_fd(const void *fds, int width, int is_unsigned, size_t n)
    int KA_HAVE_URING
    int KA_BACKEND_SYSCALLS
    int KA_BACKEND_URING
    int KA_BACKEND_AUTO
    int KA_URING_AUTO_MIN
    int KA_WORKER_IDLE_MS
    void ka_bulk_init()
    int ka_uring_status()
    int ka_uring_refusal_is_final(int err)
    int ka_uring_getsockopt_tcp_status()
    int ka_worker_count()
    int ka_release_workers()
    size_t ka_apply_bulk(const void *fds, int width, size_t n, const ka_policy *p,
                         int32_t *errnos, uint8_t *options, int nthreads, int backend)
    size_t ka_read_bulk(const void *fds, int width, size_t n, int32_t *errnos, uint8_t *options,
                        int8_t *enabled, int32_t *idle, int32_t *interval, int32_t *count,
                        int32_t *user_timeout_ms, int nthreads)

# Before any bulk call can take the pool lock: the handlers around fork() and the io_uring key.
ka_bulk_init()

IMPLEMENTATION = "c"
# backend="auto" sends options through io_uring for calls of this many sockets or more, where usable.
URING_AUTO_MIN = KA_URING_AUTO_MIN
PLATFORM_CODE = KA_PLATFORM
LIMITS = (KA_MAX_IDLE, KA_MAX_INTERVAL, KA_MAX_COUNT, KA_MAX_USER_TIMEOUT_MS)
HAVE = (bool(KA_HAVE_IDLE), bool(KA_HAVE_INTERVAL), bool(KA_HAVE_COUNT), bool(KA_HAVE_USER_TIMEOUT))

# Descriptors are C ints except on Windows, where a SOCKET is pointer-sized.
cdef int FD_WIDTH = 8 if KA_PLATFORM == 4 else 4
cdef array _FD_TEMPLATE = _array.array("q" if FD_WIDTH == 8 else "i")
cdef array _I32 = _array.array("i")
cdef array _U8 = _array.array("B")
cdef array _I8 = _array.array("b")
cdef object _socket_type = _socket.socket


cdef str _where(Py_ssize_t index):
    return "target" if index < 0 else f"targets[{index}]"


cdef inline int _check_fd(long long fd, Py_ssize_t index, bint via_fileno=False) except -1:
    if FD_WIDTH == 4 and not (-2147483648 <= fd <= 2147483647):
        raise target_error(_where(index), fd, "returned-c-int" if via_fileno else "c-int", fd)
    return 0


cdef long long _fileno(object target, Py_ssize_t index) except? -1:
    """The descriptor number of a socket, fd or object with fileno(); -1 for a closed socket.

    ``index`` names the entry in error messages (-1: a single target); messages are only built
    on error (``ka.errors.target_error``, shared with the twin), so the bulk conversion costs no
    string per entry.
    """
    cdef long long fd
    if type(target) is int:
        try:
            fd = PyLong_AsLongLong(target)
        except OverflowError:
            raise target_error(_where(index), target, "range") from None
        _check_fd(fd, index)
        return fd
    if isinstance(target, bool):
        raise target_error(_where(index), target, "bool")
    if isinstance(target, int):
        return _fileno(int(target), index)
    try:
        method = getattr(target, "fileno", None)
    except Exception as exc:
        raise target_error(_where(index), target, "lookup", exc) from exc
    if method is None:
        raise target_error(_where(index), target, "no-fileno")
    if not callable(method):
        raise target_error(_where(index), target, "not-callable", method)
    try:
        value = method()
    except Exception as exc:
        raise target_error(_where(index), target, "call", exc) from exc
    if isinstance(value, bool) or not isinstance(value, int):
        raise target_error(_where(index), target, "returned-type", value)
    try:
        fd = PyLong_AsLongLong(value)
    except OverflowError:
        raise target_error(_where(index), target, "returned-range", value) from None
    _check_fd(fd, index, True)
    return fd


cdef extern from *:
    """
    /* tuple.__new__(type, values) without the attribute lookup and the call through Python. */
    static PyObject *ka_tuple_subtype(PyObject *type, PyObject *values)
    {
        PyObject *out, *args = PyTuple_Pack(1, values);
        if (args == NULL)
            return NULL;
        out = PyTuple_Type.tp_new((PyTypeObject *)type, args, NULL);
        Py_DECREF(args);
        return out;
    }

    /* A data descriptor's value on obj (type(descr).__get__(descr, obj)) without the attribute
     * lookup by name: the descriptor was looked up once, at import. */
    static PyObject *ka_descriptor_get(PyObject *descr, PyObject *obj)
    {
        return Py_TYPE(descr)->tp_descr_get(descr, obj, (PyObject *)Py_TYPE(obj));
    }

    /* The last KeepAliveSettings read, by its C values: a pool read socket by socket mostly has
     * one set of values, and the result is immutable, so an equal read returns the same object
     * (as CPython shares small ints). Under the GIL only: a free-threaded build always builds. */
    #ifndef Py_GIL_DISABLED
    static ka_values ka_last_values;
    static PyObject *ka_last_settings = NULL;
    #endif
    static PyObject *ka_settings_seen(const ka_values *v)
    {
    #ifndef Py_GIL_DISABLED
        if (ka_last_settings != NULL && memcmp(v, &ka_last_values, sizeof(*v)) == 0) {
            Py_INCREF(ka_last_settings);
            return ka_last_settings;
        }
    #else
        (void)v;
    #endif
        return NULL;
    }
    static void ka_settings_remember(const ka_values *v, PyObject *settings)
    {
    #ifndef Py_GIL_DISABLED
        PyObject *old = ka_last_settings;
        Py_INCREF(settings);
        ka_last_values = *v;
        ka_last_settings = settings;
        Py_XDECREF(old);
    #else
        (void)v;
        (void)settings;
    #endif
    }
    """
    object ka_tuple_subtype(object type, object values)
    object ka_descriptor_get(object descr, object obj)
    PyObject *ka_settings_seen(const ka_values *v)
    void ka_settings_remember(const ka_values *v, object settings)


cdef object _KeepAlive = KeepAlive
# The slot holding a KeepAlive's packed C values, and socket.socket's own fileno method: looked up
# once here, so a call on an exact KeepAlive / socket.socket skips the lookup by name.
cdef object _C_SLOT = KeepAlive.__dict__["packed"]
cdef object _SOCKET_FILENO = _socket.socket.fileno if type(_socket.socket.fileno).__name__ == "method_descriptor" else None
cdef object _Settings = KeepAliveSettings


cdef int _c_policy(object policy, ka_policy *p) except -1:
    """A KeepAlive's C values, packed once when it was built (KeepAlive.packed): one copy per call."""
    cdef object packed
    if type(policy) is not _KeepAlive and not isinstance(policy, _KeepAlive):
        raise policy_error(policy)
    packed = ka_descriptor_get(_C_SLOT, policy) if type(policy) is _KeepAlive else policy.packed
    if type(packed) is not bytes or PyBytes_GET_SIZE(packed) != sizeof(ka_policy):
        raise TypeError(f"policy {policy!r} carries no C values (KeepAlive.packed): build it with ka.KeepAlive()")
    memcpy(p, PyBytes_AS_STRING(packed), sizeof(ka_policy))
    return 0


cdef inline object _seconds(int value):
    return value if value > 0 else None


cdef object _settings(const ka_values *v):
    """KeepAliveSettings made here, without its Python-level __new__ (a NamedTuple's costs 300+ ns)."""
    cdef PyObject *seen = ka_settings_seen(v)
    if seen != NULL:
        cached = <object>seen
        Py_DECREF(cached)  # ka_settings_seen gave a new reference, and <object> took one more
        return cached
    cdef tuple values = (
        v.enabled == 1,
        _seconds(v.idle),
        _seconds(v.interval),
        _seconds(v.count),
        PyFloat_FromDouble(v.user_timeout_ms / 1000.0) if v.user_timeout_ms >= 0 else None,
    )
    settings = ka_tuple_subtype(_Settings, values)
    ka_settings_remember(v, settings)
    return settings


cdef inline long long _fast_fd(object target, Py_ssize_t index) except? -1:
    """_fileno, with an exact socket.socket asked through its own fileno method, looked up once."""
    if type(target) is _socket_type and _SOCKET_FILENO is not None:
        value = _SOCKET_FILENO(target)
        if type(value) is int:
            return PyLong_AsLongLong(value)  # a socket's fd is a C int: no range check needed
    return _fileno(target, index)


def fileno_of(target):
    """The descriptor number ka would use for ``target``."""
    return _fileno(target, -1)


@cython.binding(False)  # a plain builtin: the interpreter calls it on its fastest path
def apply(target, policy):
    """apply(target, policy)
--

Apply ``policy`` to one socket: a ``socket.socket``, an int fd, or anything with ``fileno()``.

    Raises ``OSError`` (the errno's own subclass) with ``errno``, ``fd`` and ``option`` (a
    ``ka.Option``) when a call fails; the options before it stay applied (order: SO_KEEPALIVE,
    idle, interval, count, user timeout), so a socket whose later option failed has keepalive on
    with the values set so far and the OS's for the rest.

    For fresh sockets. On macOS and the BSDs a connection that received nothing for interval x
    count seconds is dropped ``idle`` seconds after a policy lands on it (the idle restarts the
    kernel's timer, not its receive clock): give existing connections ``ka.retrofit``.
    """
    cdef ka_policy p
    cdef int option = 0
    _c_policy(policy, &p)
    cdef long long fd = _fast_fd(target, -1)
    cdef int err = ka_apply_one(<ka_fd_t>fd, &p, &option)
    if err:
        raise option_error(err, fd, option, "setting")


@cython.binding(False)
def read(target):
    """read(target)
--

One socket's keepalive values as the kernel reports them (on Linux, the sysctl defaults
    for any value never set). A value the OS cannot report is None, never a default presented
    as the socket's: on Windows before 10 1709, idle and interval set through SIO_KEEPALIVE_VALS
    cannot be read back.

    Raises ``OSError`` with ``fd`` and ``option`` on failure.
    """
    cdef long long fd = _fast_fd(target, -1)
    cdef ka_values v
    cdef int option = 0
    cdef int err = ka_read_one(<ka_fd_t>fd, &v, &option)
    if err:
        raise option_error(err, fd, option, "reading")
    return _settings(&v)


cdef array _from_buffer(object targets):
    """Copy a 1-D buffer of 4- or 8-byte integers (any stride) into an owned fd array."""
    cdef Py_buffer view
    cdef array out
    cdef long long bad, value
    cdef unsigned long long uvalue
    cdef bytes fmt
    cdef bint is_unsigned
    cdef Py_ssize_t i, n, width, stride
    cdef char *item
    PyObject_GetBuffer(targets, &view, PyBUF_STRIDES | PyBUF_FORMAT)
    try:
        fmt = view.format if view.format != NULL else b"B"
        if fmt[:1] in (b"@", b"="):
            fmt = fmt[1:]
        width = view.itemsize
        if view.ndim != 1 or fmt not in (b"i", b"l", b"q", b"n", b"I", b"L", b"Q", b"N") or width not in (4, 8):
            raise buffer_error(fmt.decode(), width, view.ndim)
        is_unsigned = fmt in (b"I", b"L", b"Q", b"N")
        n = view.shape[0]
        stride = view.strides[0]
        out = clone(_FD_TEMPLATE, n, False)
        if stride == width and width == FD_WIDTH:  # the common case: one check, one copy
            bad = ka_first_bad_fd(view.buf, <int>width, is_unsigned, <size_t>n)
            if bad < 0:
                if n:
                    memcpy(out.data.as_voidptr, view.buf, <size_t>(n * width))
                return out
            i = bad
        else:
            i = -1
        for i in range(i if i >= 0 else 0, n):
            item = <char *>view.buf + i * stride
            if width == 8:
                value = (<long long *>item)[0]
                uvalue = <unsigned long long>value
                if is_unsigned and uvalue > 9223372036854775807ULL:
                    raise target_error(_where(i), uvalue, "range")
            elif is_unsigned:
                value = (<unsigned int *>item)[0]
            else:
                value = (<int *>item)[0]
            _check_fd(value, i)
            if FD_WIDTH == 8:
                out.data.as_longlongs[i] = value
            else:
                out.data.as_ints[i] = <int>value
        return out
    finally:
        PyBuffer_Release(&view)


def collect_fds(targets):
    """Every target as a descriptor number, in an owned array ('i', or 'q' on Windows).

    Raises TypeError/ValueError naming the first bad entry before any system call.
    """
    cdef array out
    cdef Py_ssize_t i, n
    cdef long long fd
    if PyObject_CheckBuffer(targets) and not isinstance(targets, (bytes, bytearray, str)):
        return _from_buffer(targets)
    if isinstance(targets, (str, bytes, bytearray)) or not hasattr(targets, "__iter__"):
        raise targets_error(targets)
    # A snapshot the caller cannot shrink: a fileno() or another thread may mutate the list.
    cdef tuple seq = targets if type(targets) is tuple else tuple(targets)
    n = len(seq)
    out = clone(_FD_TEMPLATE, n, False)
    for i in range(n):
        fd = _fast_fd(seq[i], i)
        if FD_WIDTH == 8:
            out.data.as_longlongs[i] = fd
        else:
            out.data.as_ints[i] = <int>fd
    return out


def uring_status():
    """(0, how) where bulk apply can use io_uring here, else (errno, why not)."""
    cdef int err
    if not KA_HAVE_URING:
        return errno.ENOSYS, "io_uring is Linux-only: one system call per option"
    with nogil:
        err = ka_uring_status()
    if err == 0:
        tcp = ka_uring_getsockopt_tcp_status()
        reads = "read_many keeps getsockopt: " + (
            "SOCKET_URING_OP_GETSOCKOPT reads TCP options here"
            if tcp == 1
            else f"SOCKET_URING_OP_GETSOCKOPT refuses TCP-level options ({_errno_name(tcp)})"
        )
        return 0, f"io_uring socket commands usable (IORING_OP_URING_CMD, Linux 6.7+); {reads}"
    if ka_uring_refusal_is_final(err):
        return err, _uring_refusal(err)
    return err, f"{_uring_refusal(err)}; this can pass, so ka asks again on a later call (at most once a second)"


def _errno_name(int err):
    return "EOPNOTSUPP" if err == errno.EOPNOTSUPP else errno.errorcode.get(err, str(err))


def _uring_refusal(int err):
    name = _errno_name(err)
    if err == errno.EPERM:
        try:
            with open("/proc/sys/kernel/io_uring_disabled") as f:
                disabled = f.read().strip()
        except OSError:
            disabled = "?"
        if disabled == "2":
            why = "kernel.io_uring_disabled=2 (io_uring off for everyone)"
        elif disabled == "1":
            why = "kernel.io_uring_disabled=1 and this process is not in kernel.io_uring_group"
        else:
            why = "a seccomp filter (such as a container runtime's default profile) refuses io_uring_setup"
        return f"io_uring_setup failed with EPERM: {why}"
    if err == errno.ENOSYS:
        return "io_uring_setup failed with ENOSYS: no io_uring in this kernel, or a seccomp filter hides it"
    if err in (errno.EOPNOTSUPP, errno.EINVAL):
        return (
            f"this kernel's io_uring lacks the socket setsockopt command or rings without a descriptor "
            f"({name}; ka needs Linux 6.7+)"
        )
    return f"io_uring could not be set up: {name} ({os.strerror(err)})"


def worker_count():
    """Bulk worker threads alive now (they exit after a while without work)."""
    return ka_worker_count()


def release_workers():
    """End the idle bulk workers now and this thread's io_uring ring; the workers still alive."""
    cdef int left
    with nogil:
        left = ka_release_workers()
    return left


def apply_many(targets, policy, int threads, str backend):
    """Apply a policy to every target: a ``ka.protocol.AppliedColumns``."""
    cdef ka_policy p
    _c_policy(policy, &p)
    cdef array fds = collect_fds(targets)
    cdef Py_ssize_t n = len(fds)
    cdef array errnos = clone(_I32, n, False)
    cdef array options = clone(_U8, n, False)
    cdef size_t failed
    cdef int nthreads = threads if threads > 0 else 1
    cdef int code = (
        KA_BACKEND_URING if backend == "io_uring" else KA_BACKEND_AUTO if backend == "auto" else KA_BACKEND_SYSCALLS
    )
    with nogil:
        failed = ka_apply_bulk(fds.data.as_voidptr, FD_WIDTH, <size_t>n, &p,
                               <int32_t *>errnos.data.as_voidptr, <uint8_t *>options.data.as_voidptr,
                               nthreads, code)
    return AppliedColumns(fds, errnos, options, failed)


def read_many(targets, int threads):
    """Read every target, one column per value: a ``ka.protocol.ReadColumns``."""
    cdef array fds = collect_fds(targets)
    cdef Py_ssize_t n = len(fds)
    cdef array errnos = clone(_I32, n, False)
    cdef array options = clone(_U8, n, False)
    cdef array enabled = clone(_I8, n, False)
    cdef array idle = clone(_I32, n, False)
    cdef array interval = clone(_I32, n, False)
    cdef array count = clone(_I32, n, False)
    cdef array user_timeout = clone(_I32, n, False)
    cdef size_t failed
    cdef int nthreads = threads if threads > 0 else 1
    with nogil:
        failed = ka_read_bulk(fds.data.as_voidptr, FD_WIDTH, <size_t>n,
                              <int32_t *>errnos.data.as_voidptr, <uint8_t *>options.data.as_voidptr,
                              <int8_t *>enabled.data.as_voidptr, <int32_t *>idle.data.as_voidptr,
                              <int32_t *>interval.data.as_voidptr, <int32_t *>count.data.as_voidptr,
                              <int32_t *>user_timeout.data.as_voidptr, nthreads)
    return ReadColumns(fds, errnos, options, enabled, idle, interval, count, user_timeout, failed)
