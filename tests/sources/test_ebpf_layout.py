"""User space's ctypes layouts (maps.py) against the compiled CO-RE object's BTF, which is what
the kernel checks map values against: a field added on one side only fails here (and at the
build), not as garbled crossings in the guest. And the header's decision logic, run as C on the
host."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from oomhero.sources.ebpf import btf, maps
from oomhero.sources.ebpf.common import ARMED_CRITICAL, ARMED_WARNING, NEXT_ARMED_BIT, armed_for
from oomhero.sources.ebpf.core import OBJECT

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "memcg_threshold.h"
CC = shutil.which("cc") or shutil.which("clang")

# The header expects its includer to give the types and helpers; a host program gives stubs.
PROGRAM = r"""
#include <stdio.h>
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define __always_inline inline __attribute__((always_inline))
struct bpf_pidns_info { __u32 pid, tgid; };
static __u64 bpf_ktime_get_ns(void) { return 0; }
static long bpf_get_ns_current_pid_tgid(__u64 d, __u64 i, struct bpf_pidns_info *n, __u32 s)
{ return -1; }
static long bpf_send_signal(__u32 sig) { return 0; }
#include "memcg_threshold.h"
int main(void)
{
    printf("armed %d %d\n", ARMED_WARNING, ARMED_CRITICAL);
    /* warning at 10 pages, critical at 20, both armed: each usage in turn */
    struct watch w = {10, 20, ARMED_WARNING | ARMED_CRITICAL, 0};
    __u64 usage[] = {9, 10, 15, 20, 25};
    for (int i = 0; i < 5; i++) {
        __u32 level = watch_crossed(&w, usage[i]);
        printf("cross %llu %u %u\n", usage[i], level, w.armed);
    }
    struct watch jump = {10, 20, ARMED_WARNING | ARMED_CRITICAL, 0};
    __u32 jumped = watch_crossed(&jump, 30);
    printf("jump %u %u\n", jumped, jump.armed);
    return 0;
}
"""
MIB = 1 << 20


@pytest.fixture(scope="module")
def header_facts(tmp_path_factory) -> list[list[str]]:
    if CC is None:
        pytest.skip("no C compiler on this host")
    work = tmp_path_factory.mktemp("layout")
    (work / "layout.c").write_text(PROGRAM)
    exe = work / "layout"
    subprocess.run([CC, f"-I{HEADER.parent}", "-o", str(exe), str(work / "layout.c")], check=True)
    return [line.split() for line in subprocess.check_output([str(exe)], text=True).splitlines()]


@pytest.fixture(scope="module")
def built_object() -> Path:
    if not OBJECT.exists():
        pytest.skip(f"no CO-RE object at {OBJECT}: make builds it (needs clang)")
    return OBJECT


def test_ctypes_layouts_match_the_objects_btf(built_object):
    assert btf.drift(built_object, maps.STRUCTS, maps.VARIABLES, maps.MAPS) == []
    # Read from the object, not taken from the mirrors: struct event as the header declares it.
    types = btf.ObjectTypes(built_object)
    assert types.layout(types.named(btf.STRUCT, "event")) == (
        40,
        [
            ("cgroup_id", 0, 8),
            ("usage_pages", 8, 8),
            ("ktime_ns", 16, 8),
            ("level", 24, 4),
            ("pid", 28, 4),
            ("signalled", 32, 4),
            ("pad", 36, 4),
        ],
    )


class SwappedEvent(ctypes.Structure):
    _fields_ = maps.layout(
        "u64 cgroup_id, u64 usage_pages, u64 ktime_ns, u32 level, u32 pid, u32 pad, u32 signalled"
    )


class ShortSettings(ctypes.Structure):
    _fields_ = maps.layout("u64 pidns_dev, u64 pidns_ino, u32 signal_on_critical")


def test_drift_is_named_member_by_member(built_object):
    problems = btf.drift(
        built_object,
        {**maps.STRUCTS, "event": SwappedEvent},
        {"settings": ShortSettings},
        {**maps.MAPS, "generation": (ctypes.c_uint32, ctypes.c_uint32)},
    )
    assert problems == [
        "struct event: the object has signalled at 32 (4 bytes), pad at 36 (4 bytes); "
        "SwappedEvent has pad at 32 (4 bytes), signalled at 36 (4 bytes)",
        "settings (a global): the object has pad at 20 (4 bytes); ShortSettings has nothing more",
        "map generation: key and value of (4, 8) bytes in the object, (4, 4) in user space",
    ]


def test_a_file_without_btf_is_refused_in_one_line(tmp_path, built_object):
    not_elf = tmp_path / "not.o"
    not_elf.write_bytes(b"\x00" * 64)
    with pytest.raises(btf.BTFError, match="not a little-endian ELF64 object"):
        btf.ObjectTypes(not_elf)
    stripped = tmp_path / "stripped.o"
    data = built_object.read_bytes()
    assert data.count(b".BTF\x00") == 1  # the section's name, in the section names
    stripped.write_bytes(data.replace(b".BTF\x00", b".XYZ\x00"))
    with pytest.raises(btf.BTFError, match=r"has no \.BTF section"):
        btf.ObjectTypes(stripped)


def test_armed_bits_and_the_in_kernel_decision(header_facts):
    assert ["armed", str(ARMED_WARNING), str(ARMED_CRITICAL)] in header_facts
    crossings = [x[1:] for x in header_facts if x[0] == "cross"]
    # usage, level reached, armed after: warning fires once, then critical, then nothing.
    assert crossings == [
        ["9", "0", "3"],
        ["10", "1", "2"],
        ["15", "0", "2"],
        ["20", "2", "0"],
        ["25", "0", "0"],
    ]
    # Straight past both: critical, and warning is disarmed with it.
    assert ["jump", "2", "0"] in header_facts
    # What user space re-arms at each policy level matches the bits the kernel clears.
    assert [armed_for(level, 0, MIB, 2 * MIB) for level in (0, 1, 2)] == [3, 2, 0]


def test_a_threshold_usage_has_reached_stays_disarmed():
    # With the working-set metric the policy may be at ok while usage (what the probe
    # compares) is past warning: armed, that bit would fire at every charge.
    warning, critical = 75 * MIB, 90 * MIB
    assert armed_for(0, 10 * MIB, warning, critical) == ARMED_WARNING | ARMED_CRITICAL
    assert armed_for(0, 80 * MIB, warning, critical) == ARMED_CRITICAL
    assert armed_for(1, 95 * MIB, warning, critical) == 0
    assert NEXT_ARMED_BIT == (ARMED_WARNING, ARMED_CRITICAL, 0)
