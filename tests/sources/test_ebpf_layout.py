"""User space's mirror of bpf/memcg_threshold.h (maps.Watch, maps.Event) against the header
itself, compiled by the host's C compiler: a field added on one side only fails here, not as
garbled crossings in the guest. And the decision logic, run as C on the host."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from oomhero.sources.ebpf.common import ARMED_CRITICAL, ARMED_WARNING, NEXT_ARMED_BIT, armed_for
from oomhero.sources.ebpf.maps import Event, Seen, Watch

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "memcg_threshold.h"
CC = shutil.which("cc") or shutil.which("clang")

# The header expects its includer to give the types and helpers; a host program gives stubs.
PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define __always_inline inline __attribute__((always_inline))
struct bpf_pidns_info { __u32 pid, tgid; };
static __u64 bpf_ktime_get_ns(void) { return 0; }
static long bpf_get_ns_current_pid_tgid(__u64 d, __u64 i, struct bpf_pidns_info *n, __u32 s)
{ return -1; }
static long bpf_send_signal(__u32 sig) { return 0; }
#include "memcg_threshold.h"
#define F(s, f) printf(#s " " #f " %zu %zu\n", offsetof(struct s, f), sizeof(((struct s *)0)->f))
int main(void)
{
    F(watch, warning_pages); F(watch, critical_pages); F(watch, armed); F(watch, pad);
    F(event, cgroup_id); F(event, usage_pages); F(event, ktime_ns); F(event, level);
    F(event, pid); F(event, signalled); F(event, pad);
    F(seen, calls); F(seen, memcg); F(seen, usage_pages); F(seen, nr_pages);
    F(seen, line_memcg); F(seen, line_id); F(seen, line_generation); F(seen, line_watched);
    F(seen, watched_memcg); F(seen, watched_id);
    printf("size watch %zu\nsize event %zu\n", sizeof(struct watch), sizeof(struct event));
    printf("size seen %zu\n", sizeof(struct seen));
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


@pytest.mark.parametrize("struct", [Watch, Event, Seen])
def test_ctypes_mirror_the_header(header_facts, struct):
    name = struct.__name__.lower()
    in_c = [
        (f, int(off), int(size))
        for s, f, off, size in (x for x in header_facts if len(x) == 4)
        if s == name
    ]
    ours = [(f, getattr(struct, f).offset, getattr(struct, f).size) for f, _ in struct._fields_]
    assert ours == in_c
    assert ["size", name, str(ctypes.sizeof(struct))] in header_facts


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
