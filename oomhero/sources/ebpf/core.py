"""The charge probe as a prebuilt libbpf CO-RE object (bpf/memcg_threshold.bpf.c, compiled by
the build into memcg_threshold.bpf.o beside this file): no compiler and no LLVM at run time.

libbpf relocates the object's field offsets against the running kernel's BTF, so the same
``.o`` loads on every kernel that has ``/sys/kernel/btf/vmlinux``. It tries each probe point in
turn (page_counter_try_charge, then the per-page charge functions), fentry first (a BPF
trampoline, cheaper than a kprobe), then a kprobe. Loading takes a fraction of a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import select
import time
from collections.abc import Sequence
from pathlib import Path

from oomhero.kernel.procfs import pid_namespace

from . import libbpf
from .common import Crossing, ProbeError, crossing_at, watch_value
from .maps import Seen, Settings

OBJECT = Path(__file__).resolve().with_name("memcg_threshold.bpf.o")
# The object's programs by (attach kind, charge function); per function, fentry is tried first.
PROGRAMS = {
    ("fentry", "page_counter_try_charge"): "counter_fentry",
    ("kprobe", "page_counter_try_charge"): "counter_kprobe",
    ("fentry", "try_charge_memcg"): "charge_fentry",
    ("kprobe", "try_charge_memcg"): "charge_kprobe",
    ("kprobe", "try_charge"): "charge_kprobe_old",
}


class CoreProbe:
    """The prebuilt CO-RE object, loaded and attached by libbpf (``start``), then a source."""

    name = "ebpf"
    mask = select.EPOLLIN
    loader = "core"

    def __init__(self, signal_on_critical: int = 0, path: Path = OBJECT) -> None:
        self.signal_on_critical = signal_on_critical
        self.path = path
        self.function: str | None = None
        self.attach: str | None = None  # "fentry" or "kprobe"
        self.refused: str | None = None  # what was tried before the program that attached
        self.load_seconds: float | None = None
        self._object: libbpf.BpfObject | None = None
        self._ring: libbpf.RingBuffer | None = None
        self._watches_fd = self._seen_fd = self._generation_fd = -1
        self._watched: set[int] = set()  # cgroup ids in the watches map
        self._generation = 0
        self._pending: list[Crossing] = []
        self._read_at = 0.0

    def start(self, functions: Sequence[str], attach_only: str | None = None) -> None:
        """Load the first program the kernel takes, by function in the order given, fentry
        before kprobe (only the ``attach_only`` kind when given); ProbeError if none."""
        if not self.path.exists():
            raise ProbeError(f"no CO-RE object at {self.path} (the build makes it with clang)")
        started = time.monotonic()
        refusals = []
        tries = [(a, f) for f in functions for a in ("fentry", "kprobe") if (a, f) in PROGRAMS]
        for attach, function in tries:
            if attach_only not in (None, attach):
                continue
            program = PROGRAMS[(attach, function)]
            # Each try opens the object afresh (a refused load leaves it unusable); a file
            # libbpf cannot open is refused for every program alike.
            obj = libbpf.BpfObject(str(self.path))
            try:
                self._load(obj, program)
            except ProbeError as exc:
                obj.close()
                refusals.append(f"{attach} {function}: {exc}")
                continue
            self.function, self.attach = function, attach
            self.refused = "; ".join(refusals) or None
            self.load_seconds = time.monotonic() - started
            return
        raise ProbeError("; ".join(refusals) or f"no program in the object for {functions}")

    def _load(self, obj: libbpf.BpfObject, program: str) -> None:
        dev, ino = pid_namespace()
        obj.set_rodata(Settings(dev, ino, self.signal_on_critical, 0))
        for name in PROGRAMS.values():
            obj.set_autoload(name, name == program)
        obj.load()
        obj.attach(program)
        self._watches_fd = obj.map_fd("watches")
        self._seen_fd = obj.map_fd("seen")
        self._generation_fd = obj.map_fd("generation")
        self._ring = libbpf.RingBuffer(obj.map_fd("events"), self._on_record)
        self._object = obj

    # -- as a source in the loop -------------------------------------------------------------
    def fileno(self) -> int:
        return self._ring.fileno()

    def consume(self) -> list[Crossing]:
        self._pending, self._read_at = [], time.monotonic()
        self._ring.consume()
        return self._pending

    def _on_record(self, address: int, size: int) -> None:
        self._pending.append(crossing_at(address, size, self._read_at))

    def calls(self) -> int:
        """Calls of the probed function so far, on every CPU (OSError: the map is unreadable)."""
        per_cpu = libbpf.lookup_per_cpu(self._seen_fd, ctypes.c_uint32(0), Seen)
        return sum(seen.calls for seen in per_cpu)

    def watch(self, cid: int, warning: int, critical: int, armed: int) -> None:
        """Set a cgroup's thresholds (bytes) and armed bits in the probe's map."""
        libbpf.update_elem(
            self._watches_fd, ctypes.c_uint64(cid), watch_value(warning, critical, armed)
        )
        if cid not in self._watched:
            self._watched.add(cid)
            self._next_generation()

    def unwatch(self, cid: int) -> None:
        with contextlib.suppress(FileNotFoundError):  # never written, or already gone
            libbpf.delete_elem(self._watches_fd, ctypes.c_uint64(cid))
        self._watched.discard(cid)
        self._next_generation()

    def _next_generation(self) -> None:
        """A watch added or removed: every CPU's cached line (which of a charged cgroup's levels
        are watched) is stale; the probe walks the hierarchy again at each CPU's next charge."""
        self._generation += 1
        libbpf.update_elem(
            self._generation_fd, ctypes.c_uint32(0), ctypes.c_uint64(self._generation)
        )

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._object is not None:
            self._object.close()
            self._object = None
