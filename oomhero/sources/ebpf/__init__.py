"""The ``ebpf`` wake-up source: a probe on the memcg charge path (bpf/).

The probe checks each watched cgroup's thresholds in the kernel as pages are charged, so a
crossing is seen at the charge that makes it, not at the next sample. One module a job:

- ``loader``: what the probe needs (privilege, a charge function) and which loader serves:
  ``core.CoreProbe``, the prebuilt libbpf CO-RE object (loads in a fraction of a second, no
  compiler) wherever the kernel has BTF; else ``bcc.BccProbe`` (compiles at start against the
  kernel's headers: seconds, tens of seconds under emulation), when asked for.
- ``watches``: the probe as the engine sees it (``ProbeWatches``): loaded in a helper thread
  while the other sources and polling already run, then its ring buffer in the loop's epoll
  like any other source; given up with one line once it stops working.
- ``common``: what both loaders share (``Crossing``, ``ProbeError``, the armed bits);
  ``maps``: the ctypes layouts of the object's maps, checked against its BTF by ``btf``;
  ``libbpf``: the few libbpf calls the CO-RE loader makes, through ctypes.

Every problem — no privilege, no charge function, then for bcc no bcc, no headers, a compile
error — becomes one ``Unavailable`` reason. Below: what the engine and doctor use.
"""

from __future__ import annotations

from oomhero.sources.ebpf.common import Crossing, ProbeError
from oomhero.sources.ebpf.core import OBJECT
from oomhero.sources.ebpf.loader import (
    KERNEL_BTF,
    charge_functions,
    core_trial,
    may_load_kprobes,
    prerequisites,
)
from oomhero.sources.ebpf.watches import ProbeWatches

__all__ = [
    "KERNEL_BTF",
    "OBJECT",
    "Crossing",
    "ProbeError",
    "ProbeWatches",
    "charge_functions",
    "core_trial",
    "may_load_kprobes",
    "prerequisites",
]
