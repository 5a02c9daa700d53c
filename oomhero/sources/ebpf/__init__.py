"""The ``ebpf`` wake-up source: a probe on the memcg charge path (bpf/).

The probe checks each watched cgroup's thresholds in the kernel as pages are charged, so a
crossing is seen at the charge that makes it, not at the next sample. Two loaders serve it:
the prebuilt libbpf CO-RE object (``core``: loads in a fraction of a second, no compiler), used
wherever the kernel has BTF; and bcc (``ChargeProbe``: compiles at start against the
kernel's headers, seconds, tens of seconds under emulation), the fallback where there is no BTF
or the object is refused (``loader``). Loading happens in a helper thread while the other
sources and polling already run; the loop learns it is ready through a pipe and then takes the
probe's ring buffer into its epoll like any other source (``watches``). Every problem — no
privilege, no charge function, then for bcc no bcc, no headers, a compile error — becomes one
``Unavailable`` reason; a probe that stops working later is given up with one line.
"""

from __future__ import annotations

from oomhero.sources.ebpf.bcc import ChargeProbe
from oomhero.sources.ebpf.common import (
    ARMED_CRITICAL,
    ARMED_WARNING,
    CHARGE_FUNCTIONS,
    PAGE,
    Crossing,
    ProbeError,
    armed_for,
    charge_functions,
    may_load_kprobes,
)
from oomhero.sources.ebpf.core import OBJECT
from oomhero.sources.ebpf.loader import (
    BCC_NOT_ASKED,
    KERNEL_BTF,
    core_trial,
    load_probe,
    prerequisites,
)
from oomhero.sources.ebpf.watches import ProbeWatches

__all__ = [
    "ARMED_CRITICAL",
    "ARMED_WARNING",
    "BCC_NOT_ASKED",
    "CHARGE_FUNCTIONS",
    "KERNEL_BTF",
    "OBJECT",
    "PAGE",
    "ChargeProbe",
    "Crossing",
    "ProbeError",
    "ProbeWatches",
    "armed_for",
    "charge_functions",
    "core_trial",
    "load_probe",
    "may_load_kprobes",
    "prerequisites",
]
