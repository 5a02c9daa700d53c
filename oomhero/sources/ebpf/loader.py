"""Which loader and which probe point: the prebuilt CO-RE object where the kernel has BTF (and
takes it), else bcc when asked for; page_counter_try_charge first, the per-page charge functions
where it cannot attach; and what either needs first (the privilege, a charge function). Every
refusal is kept for the one line that says what was taken."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

from oomhero.config.table import BPF_ATTACH_ENV
from oomhero.kernel.procfs import effective_capabilities, kernel_symbols_among
from oomhero.sources.ebpf.bcc import BccProbe, bcc_prerequisites
from oomhero.sources.ebpf.common import ProbeError
from oomhero.sources.ebpf.core import CoreProbe

# The kernel's own BTF: where it is, the CO-RE object can be relocated (and fentry attached).
KERNEL_BTF = "/sys/kernel/btf/vmlinux"
# The probe points, in the order tried. page_counter_try_charge(counter, nr_pages, fail) runs
# once per charge batch (64 pages: the memcg refills a per-CPU stock), for every kind of page
# counter (the probe checks it is a memcg's ``memory``); the memcg's own charge functions,
# (memcg, gfp_mask, nr_pages), run once per page: the fallback where the first cannot attach.
CHARGE_FUNCTIONS = ("page_counter_try_charge", "try_charge_memcg", "try_charge")
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def charge_functions(kallsyms: str = "/proc/kallsyms") -> list[str]:
    """The probe points this kernel has, in the order to try them (ProbeError: none)."""
    try:
        names = kernel_symbols_among(CHARGE_FUNCTIONS, kallsyms)
    except OSError as exc:
        raise ProbeError(f"cannot read {kallsyms}: {exc.strerror}") from None
    found = [name for name in CHARGE_FUNCTIONS if name in names]
    if not found:
        raise ProbeError(f"no memcg charge function to probe ({' or '.join(CHARGE_FUNCTIONS)})")
    return found


def may_load_kprobes() -> bool:
    """Whether this process may load tracing programs (fentry or kprobe)."""
    effective = effective_capabilities()

    def has(cap: int) -> bool:
        return bool(effective >> cap & 1)

    return has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))


def functions_to_try() -> list[str]:
    """What either loader needs: the privilege, and a charge function; returns the functions
    to try."""
    if not may_load_kprobes():
        raise ProbeError("loading the probe needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN")
    return charge_functions()


# Why the default does not compile: bcc costs tens of seconds and ~160 MiB at every start.
BCC_NOT_ASKED = (
    "the bcc fallback (a compile at start, LLVM in this process) runs only when asked for: "
    "name ebpf in --sources"
)


def prerequisites(btf: str = KERNEL_BTF, bcc: bool = True) -> str:
    """Check the probe would load, for doctor and status; returns the function it would probe.
    The CO-RE object is loaded and closed again to know (BTF and the file tell too little: a
    locked-down kernel refuses the load); where it is refused, bcc's needs (if ``bcc``)."""
    functions = functions_to_try()
    function, why = core_trial(tuple(functions), btf)
    if why is None:
        return function
    if not bcc:
        raise ProbeError(f"{why}; {BCC_NOT_ASKED}")
    try:
        bcc_prerequisites()
    except ProbeError as exc:
        raise ProbeError(f"{why}; bcc: {exc}") from None
    return functions[0]


@functools.cache
def core_trial(functions: tuple[str, ...], btf: str = KERNEL_BTF) -> tuple[str | None, str | None]:
    """(the function the CO-RE probe attaches to here, None) or (None, why it does not load):
    a trial load, once."""
    probe, why = _load_core(0, functions, btf)
    if probe is None:
        return None, why
    probe.close()
    return probe.function, None


# One way of attaching, forced (the bench compares them): fentry or kprobe (the CO-RE object),
# or bcc (its compiled kprobe, as where there is no BTF), optionally at one of the probe points
# (``kprobe:try_charge_memcg``). Unset: page_counter_try_charge by fentry, then kprobe, then the
# per-page functions, then bcc.
ATTACH_CHOICES = ("fentry", "kprobe", "bcc")


def forced_attach(value: str | None, functions: list[str]) -> tuple[str | None, list[str]]:
    """``BPF_ATTACH_ENV``'s value → (the attach kind or None, the functions to try)."""
    if not value:
        return None, functions
    attach, _, function = value.partition(":")
    if attach not in ATTACH_CHOICES or (function and function not in CHARGE_FUNCTIONS):
        raise ProbeError(
            f"{BPF_ATTACH_ENV}={value}: expected one of {', '.join(ATTACH_CHOICES)}, optionally "
            f"with :FUNCTION, one of {', '.join(CHARGE_FUNCTIONS)}"
        )
    if function and function not in functions:
        raise ProbeError(f"{BPF_ATTACH_ENV}={value}: this kernel has no {function} to probe")
    return attach, [function] if function else functions


def _load_core(
    signal_on_critical: int, functions: Sequence[str], btf: str, attach: str | None = None
) -> tuple[CoreProbe | None, str | None]:
    """The CO-RE probe loaded and attached (by ``attach`` only, when given), or None and why
    not."""
    if attach == "bcc":
        return None, f"{BPF_ATTACH_ENV}=bcc"
    if not os.path.exists(btf):
        return None, f"no kernel BTF at {btf}"
    core = CoreProbe(signal_on_critical)
    try:
        core.start(functions, attach)
    except ProbeError as exc:
        return None, f"the CO-RE object was refused: {exc}"
    return core, None


def load_probe(
    signal_on_critical: int, btf: str = KERNEL_BTF, bcc: bool = True
) -> tuple[CoreProbe | BccProbe, str | None]:
    """The probe, loaded and attached: CO-RE where the kernel has BTF, else (or when the object
    is refused) bcc, if ``bcc``. Returns it and why it is not CO-RE (None when it is);
    ProbeError when neither loads, naming both reasons."""
    functions = functions_to_try()  # both loaders need these: no point trying either
    attach, functions = forced_attach(os.environ.get(BPF_ATTACH_ENV), functions)
    core, why = _load_core(signal_on_critical, functions, btf, attach)
    if core is not None:
        return core, None
    if not bcc:
        raise ProbeError(f"{why}; {BCC_NOT_ASKED}")
    probe = BccProbe(signal_on_critical)
    try:
        probe.start(functions)
    except ProbeError as exc:
        raise ProbeError(f"{why}; bcc: {exc}") from None
    return probe, why
