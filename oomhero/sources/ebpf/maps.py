"""The probe's data as ctypes: the map values and ring buffer record of bpf/memcg_threshold.h
and the object's ``settings`` (its ``.rodata``), mirrored by hand.

They are checked against the compiled object's BTF (``btf``: member names, offsets, sizes) by
bpf/build.py after each compile and by tests/sources/test_ebpf_layout.py. Standard library only:
the build loads this file by its path, without the package and its dependencies.
"""

from __future__ import annotations

import ctypes

LINE_WATCHED = 4  # watched levels a CPU's cached line holds (memcg_threshold.h)


def layout(spec: str) -> tuple[tuple[str, type], ...]:
    """A C struct's fields for ctypes, from ``"u64 name, u32 other"`` as the header writes them."""
    kinds = {"u64": ctypes.c_uint64, "u32": ctypes.c_uint32}
    return tuple((name, kinds[kind]) for kind, name in (f.split() for f in spec.split(", ")))


class Watch(ctypes.Structure):
    """``struct watch``: the value of the ``watches`` map, keyed by cgroup id."""

    _fields_ = layout("u64 warning_pages, u64 critical_pages, u32 armed, u32 pad")


class Seen(ctypes.Structure):
    """``struct seen``: one CPU's value of the per-CPU ``seen`` map."""

    _fields_ = (
        *layout("u64 calls, u64 memcg, u64 usage_pages, u64 nr_pages, u64 line_memcg"),
        *layout("u64 line_id, u64 line_generation, u64 line_watched"),
        ("watched_memcg", ctypes.c_uint64 * LINE_WATCHED),
        ("watched_id", ctypes.c_uint64 * LINE_WATCHED),
    )


class Event(ctypes.Structure):
    """``struct event``: one record of the ``events`` ring buffer."""

    _fields_ = layout(
        "u64 cgroup_id, u64 usage_pages, u64 ktime_ns, u32 level, u32 pid, u32 signalled, u32 pad"
    )


class Settings(ctypes.Structure):
    """The object's ``settings`` (its whole ``.rodata``), set before load."""

    _fields_ = layout("u64 pidns_dev, u64 pidns_ino, u32 signal_on_critical, u32 pad")


# What the object's BTF is checked against: a struct by its C name, or (``settings``, an
# anonymous struct) by the variable's name.
STRUCTS: dict[str, type[ctypes.Structure]] = {"watch": Watch, "seen": Seen, "event": Event}
VARIABLES: dict[str, type[ctypes.Structure]] = {"settings": Settings}
# Each map's key and value types, for their sizes (the ring buffer has neither).
MAPS: dict[str, tuple[type, type]] = {
    "watches": (ctypes.c_uint64, Watch),
    "seen": (ctypes.c_uint32, Seen),
    "generation": (ctypes.c_uint32, ctypes.c_uint64),
}
