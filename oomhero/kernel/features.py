"""What this kernel offers oomhero, beyond cgroups: PSI, kprobes, headers for bcc, v1 events."""

from __future__ import annotations

import os

PSI_MEMORY = "/proc/pressure/memory"
KPROBE_FILES = ("/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events")


def psi_error() -> str | None:
    """Why system-wide PSI cannot be read, or None when it can."""
    try:
        with open(PSI_MEMORY) as f:
            f.read()
    except OSError as exc:
        return f"{PSI_MEMORY}: {exc.strerror}"
    return None


def kprobe_events() -> str | None:
    """tracefs's kprobe_events file, where kprobes can be defined; None without kprobes."""
    return next((f for f in KPROBE_FILES if os.path.exists(f)), None)


def kernel_headers() -> tuple[str, str]:
    """(where bcc looks for this kernel's headers, the kernel release)."""
    release = os.uname().release
    return f"/lib/modules/{release}/build", release


def v1_event_control(v1_mount: str) -> str:
    """The v1 file that registers eventfd thresholds, at the memory hierarchy's root."""
    return f"{v1_mount}/cgroup.event_control"
