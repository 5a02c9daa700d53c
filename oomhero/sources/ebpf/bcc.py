"""The bcc loader, the fallback where the kernel has no BTF or the CO-RE object is refused: it
compiles bpf/memcg_threshold_bcc.c at start against the kernel's headers (seconds; tens of
seconds under emulation), with LLVM in this process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import time
from collections.abc import Sequence
from pathlib import Path

from oomhero.kernel.procfs import pid_namespace
from oomhero.sources.ebpf.common import (
    Crossing,
    ProbeError,
    crossing_at,
    first_line,
    watch_value,
)

# bcc's source: in an installed wheel beside this file (setup.py puts it there), in the
# repository at bpf/.
_HERE = Path(__file__).resolve().parent
BPF_SOURCES = next(
    (
        d
        for d in (_HERE / "bpf", _HERE.parents[2] / "bpf")
        if (d / "memcg_threshold_bcc.c").exists()
    ),
    _HERE.parents[2] / "bpf",
)
PROGRAM = BPF_SOURCES / "memcg_threshold_bcc.c"
# The program for each charge function (memcg_threshold_bcc.c): the batch function's arguments
# differ from the per-page ones'.
PROGRAMS = {
    "page_counter_try_charge": "on_counter_charge",
    "try_charge_memcg": "on_charge",
    "try_charge": "on_charge",
}
# What every kernel build includes first: where it is missing, the headers are not whole.
KCONFIG = "include/linux/kconfig.h"


def bcc_prerequisites() -> None:
    """What bcc needs beyond the common prerequisites: bcc itself and the kernel's headers."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise ProbeError(
            "bcc is not importable: install python3-bpfcc and run oomhero from a venv made "
            "from /usr/bin/python3 with --system-site-packages"
        ) from None
    release = os.uname().release
    modules = Path(f"/lib/modules/{release}")
    if not (modules / "build").exists():
        raise ProbeError(f"no kernel headers at {modules}/build (install linux-headers-{release})")
    # Checked, not left to the compile: against headers that do not parse, bcc's frontend
    # crashes the whole process (SIGSEGV) instead of raising.
    if not any((modules / tree / KCONFIG).exists() for tree in ("build", "source")):
        raise ProbeError(
            f"the kernel headers at {modules}/build lack their source tree (no {KCONFIG} "
            f"under build/ or source/; install linux-headers-{release} with its -common package)"
        )


class BccProbe:
    """The probe compiled by bcc and attached as a kprobe (``start``), then a source."""

    name = "ebpf"
    mask = select.EPOLLIN
    loader = "bcc"
    attach = "kprobe"

    def __init__(self, signal_on_critical: int = 0) -> None:
        self.signal_on_critical = signal_on_critical
        self.function: str | None = None
        self.refused: str | None = None  # the probe points tried before the one attached
        self.load_seconds: float | None = None
        self._bpf = None
        self._watches_fd = -1
        self._ring_fd = -1
        self._watched: set[int] = set()  # cgroup ids in the watches map
        self._generation = 0
        self._pending: list[Crossing] = []
        self._read_at = 0.0

    def start(self, functions: Sequence[str]) -> None:
        """Compile, then attach a kprobe to the first of ``functions`` that takes one."""
        bcc_prerequisites()
        from bcc import BPF

        started = time.monotonic()
        dev, ino = pid_namespace()
        try:
            bpf = BPF(
                text=PROGRAM.read_text(),
                cflags=[
                    f"-I{BPF_SOURCES}",
                    f"-DSIGNAL_ON_CRITICAL={self.signal_on_critical}",
                    f"-DPIDNS_DEV={dev}ULL",
                    f"-DPIDNS_INO={ino}ULL",
                    "-w",
                ],
            )
        except Exception as exc:  # bcc raises plain Exceptions for compile and load errors
            raise ProbeError(f"the probe did not compile or load: {first_line(exc)}") from None
        refusals = []
        for function in functions:
            try:
                bpf.attach_kprobe(event=function, fn_name=PROGRAMS[function])
                break
            except Exception as exc:
                refusals.append(f"kprobe {function}: {first_line(exc)}")
        else:
            bpf.cleanup()
            raise ProbeError(f"cannot attach: {'; '.join(refusals)}")
        self.refused = "; ".join(refusals) or None
        self.function = function
        self.load_seconds = time.monotonic() - started
        self._watches_fd = bpf["watches"].map_fd
        ring = bpf["events"]
        ring.open_ring_buffer(self._on_event)
        self._ring_fd = ring.map_fd
        self._bpf = bpf

    # -- as a source in the loop -------------------------------------------------------------
    def fileno(self) -> int:
        return self._ring_fd

    def consume(self) -> list[Crossing]:
        self._pending, self._read_at = [], time.monotonic()
        self._bpf.ring_buffer_consume()
        return self._pending

    def _on_event(self, _ctx, data, size) -> None:
        self._pending.append(crossing_at(data, size, self._read_at))

    def calls(self) -> int:
        """Calls of the probed function so far, on every CPU (OSError: the map is unreadable)."""
        try:
            return sum(seen.calls for seen in self._bpf["seen"][ctypes.c_uint32(0)])
        except KeyError as exc:  # bcc's lookup failed
            raise OSError(f"the probe's seen map: {exc}") from None

    def watch(self, cid: int, warning: int, critical: int, armed: int) -> None:
        """Set a cgroup's thresholds (bytes) and armed bits in the probe's map."""
        # The same layout as the CO-RE loader's (maps.Watch), through bcc's own libbpf.
        self._bpf["watches"][ctypes.c_uint64(cid)] = watch_value(warning, critical, armed)
        if cid not in self._watched:
            self._watched.add(cid)
            self._next_generation()

    def unwatch(self, cid: int) -> None:
        with contextlib.suppress(KeyError):
            del self._bpf["watches"][ctypes.c_uint64(cid)]
        self._watched.discard(cid)
        self._next_generation()

    def _next_generation(self) -> None:
        """A watch added or removed: every CPU's cached line is stale (see core.py)."""
        self._generation += 1
        self._bpf["generation"][ctypes.c_int(0)] = ctypes.c_uint64(self._generation)

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
