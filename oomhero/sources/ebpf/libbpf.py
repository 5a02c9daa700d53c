"""A small ctypes layer over Debian's libbpf.so.1 (package libbpf1, 1.1): what ``core`` needs
to open the prebuilt object, set its read-only data, load and attach one program, update a map
and read a ring buffer. No binding on PyPI is maintained for this (bpf/README.md).

libbpf 1.x returns NULL and sets errno from functions that return pointers, and a negative
errno from those that return int; both become ``ProbeError``, with libbpf's own first warning
(it explains more than the errno), while everything libbpf prints goes to our debug log.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable

from oomhero import log

from .common import ProbeError

SONAME = "libbpf.so.1"
LIBBPF_WARN = 0

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p)
_warnings: list[str] = []  # libbpf's warnings since the last call into it


@_PRINT_FN
def _print(level: int, fmt: bytes, args: int) -> int:
    # libbpf hands a printf format and a va_list: libc formats it.
    if level != LIBBPF_WARN and not log.debugging():
        return 0  # libbpf's info and debug lines are many: not even formatted unless wanted
    buf = ctypes.create_string_buffer(1024)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace").strip()
    if text:
        if level == LIBBPF_WARN:
            _warnings.append(text.removeprefix("libbpf: "))
        log.event(logging.DEBUG, "libbpf", text=text)
    return 0


def _signatures(lib: ctypes.CDLL) -> None:
    p, i, s, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint64
    for name, restype, argtypes in (
        ("libbpf_set_print", p, (_PRINT_FN,)),
        ("libbpf_strerror", i, (i, s, ctypes.c_size_t)),
        ("bpf_object__open_file", p, (s, p)),
        ("bpf_object__load", i, (p,)),
        ("bpf_object__close", None, (p,)),
        ("bpf_object__find_map_by_name", p, (p, s)),
        ("bpf_object__find_program_by_name", p, (p, s)),
        ("bpf_map__set_initial_value", i, (p, p, ctypes.c_size_t)),
        ("bpf_map__value_size", ctypes.c_uint32, (p,)),
        ("bpf_map__fd", i, (p,)),
        ("bpf_program__set_autoload", i, (p, ctypes.c_bool)),
        ("bpf_program__attach", p, (p,)),
        ("bpf_link__destroy", i, (p,)),
        ("bpf_map_update_elem", i, (i, p, p, u64)),
        ("bpf_map_lookup_elem", i, (i, p, p)),
        ("libbpf_num_possible_cpus", i, ()),
        ("bpf_map_delete_elem", i, (i, p)),
        ("ring_buffer__new", p, (i, _SAMPLE_FN, p, p)),
        ("ring_buffer__epoll_fd", i, (p,)),
        ("ring_buffer__consume", i, (p,)),
        ("ring_buffer__free", None, (p,)),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes


def library() -> ctypes.CDLL:
    """libbpf, loaded on first use (so that importing oomhero never needs it)."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(SONAME, use_errno=True)
        except OSError:
            raise ProbeError(f"{SONAME} not found (install libbpf1)") from None
        _signatures(lib)
        lib.libbpf_set_print(_print)
        _lib = lib
    return _lib


def _failed(what: str, err: int) -> ProbeError:
    """The error for a failed call: errno, and libbpf's first warning about it if any."""
    said, _warnings[:] = _warnings[:1], []
    buf = ctypes.create_string_buffer(200)  # libbpf's own codes (4000+) are not errnos
    library().libbpf_strerror(-abs(err), buf, len(buf))
    reason = buf.value.decode(errors="replace") if err else "failed"
    return ProbeError(f"{what}: {reason}" + (f" ({said[0]})" if said else ""))


def _pointer(result: int | None, what: str) -> int:
    if not result:
        raise _failed(what, ctypes.get_errno())
    _warnings.clear()
    return result


def _status(result: int, what: str) -> None:
    if result < 0:
        raise _failed(what, result)
    _warnings.clear()


class BpfObject:
    """An opened ELF object: set up (rodata, which programs load), then loaded and attached."""

    def __init__(self, path: str) -> None:
        self.lib = library()
        self.path = path
        _warnings.clear()
        self._obj = _pointer(self.lib.bpf_object__open_file(path.encode(), None), f"open {path}")
        self._links: list[int] = []

    def _map(self, name: str) -> int:
        found = self.lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if not found:
            raise ProbeError(f"{self.path} has no map {name}")
        return found

    def _program(self, name: str) -> int:
        found = self.lib.bpf_object__find_program_by_name(self._obj, name.encode())
        if not found:
            raise ProbeError(f"{self.path} has no program {name}")
        return found

    def set_rodata(self, value: ctypes.Structure) -> None:
        """Set ``.rodata`` (the object's ``const volatile`` globals) before load; ``value``
        must mirror the whole section, which is checked by size."""
        rodata = self._map(".rodata")
        size = self.lib.bpf_map__value_size(rodata)
        if size != ctypes.sizeof(value):
            raise ProbeError(
                f"{self.path}: .rodata is {size} bytes, expected {ctypes.sizeof(value)}"
            )
        status = self.lib.bpf_map__set_initial_value(rodata, ctypes.byref(value), size)
        _status(status, "set .rodata")

    def set_autoload(self, program: str, autoload: bool) -> None:
        _status(self.lib.bpf_program__set_autoload(self._program(program), autoload), program)

    def load(self) -> None:
        _status(self.lib.bpf_object__load(self._obj), "load")

    def attach(self, program: str) -> None:
        """Attach as the program's SEC() says (fentry/NAME, kprobe/NAME); detached at close."""
        link = self.lib.bpf_program__attach(self._program(program))
        self._links.append(_pointer(link, f"attach {program}"))

    def map_fd(self, name: str) -> int:
        return self.lib.bpf_map__fd(self._map(name))

    def close(self) -> None:
        for link in self._links:
            self.lib.bpf_link__destroy(link)
        self._links = []
        if self._obj:
            self.lib.bpf_object__close(self._obj)
            self._obj = None


def update_elem(fd: int, key: ctypes._CData, value: ctypes._CData) -> None:
    if library().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), 0) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def lookup_per_cpu(fd: int, key: ctypes._CData, value: type[ctypes.Structure]) -> list:
    """A per-CPU map's values under ``key``, one per possible CPU (each ``value``-typed)."""
    cpus = library().libbpf_num_possible_cpus()
    if cpus < 0:
        raise OSError(-cpus, os.strerror(-cpus))
    values = (value * cpus)()  # the kernel rounds each to 8 bytes: the structs are u64s
    if library().bpf_map_lookup_elem(fd, ctypes.byref(key), values) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return list(values)


def delete_elem(fd: int, key: ctypes._CData) -> None:
    if library().bpf_map_delete_elem(fd, ctypes.byref(key)) < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


class RingBuffer:
    """libbpf's ring buffer reader on a ring buffer map: ``fileno`` (an epoll fd, readable
    when records wait) for our loop, ``consume`` calls ``on_record(address, size)`` for each."""

    def __init__(self, map_fd: int, on_record: Callable[[int, int], None]) -> None:
        self.lib = library()
        self._on_record = on_record
        self._error: BaseException | None = None
        self._callback = _SAMPLE_FN(self._sample)  # kept: libbpf holds the pointer
        rb = self.lib.ring_buffer__new(map_fd, self._callback, None, None)
        self._rb = _pointer(rb, "ring_buffer__new")

    def _sample(self, _ctx: int, data: int, size: int) -> int:
        # An exception must not unwind through libbpf: keep it for consume() to raise.
        try:
            self._on_record(data, size)
        except BaseException as exc:
            self._error = exc
            return -1
        return 0

    def fileno(self) -> int:
        return self.lib.ring_buffer__epoll_fd(self._rb)

    def consume(self) -> int:
        count = self.lib.ring_buffer__consume(self._rb)
        error, self._error = self._error, None
        if error is not None:
            raise error
        if count < 0:
            raise OSError(-count, os.strerror(-count))
        return count

    def close(self) -> None:
        if self._rb:
            self.lib.ring_buffer__free(self._rb)
            self._rb = None
