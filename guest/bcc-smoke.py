"""bcc smoke test for the qemu guest: guest/run -- .venv/bin/python guest/bcc-smoke.py

Compiles a kprobe on the memcg charge function, runs a 32 MiB allocation in a child
cgroup and checks that the probe fired for it, that it read the cgroup's id and usage
from kernel structs (kn->id must equal the cgroup directory's inode number), and that
ring buffer events arrive through the map fd in an epoll set. Exits 0 on success.
"""

import os
import select
import subprocess
import sys
import time

t0 = time.monotonic()
from bcc import BPF  # noqa: E402  (timed on purpose)

t_import = time.monotonic() - t0

CANDIDATES = ("try_charge_memcg", "try_charge", "mem_cgroup_try_charge")
WORKLOAD = 'b = bytearray(32 << 20); b[::4096] = b"x" * (len(b) // 4096)'

PROGRAM = r"""
#include <linux/memcontrol.h>
#include <linux/cgroup-defs.h>
#include <linux/kernfs.h>

struct stats { u64 hits; u64 pages; u64 max_usage; u64 drops; };
struct event { u64 cgid; u64 usage; u32 nr_pages; u32 pid; };

BPF_ARRAY(total, u64, 1);                  // every charge, any cgroup
BPF_HASH(per_cgroup, u64, struct stats);   // keyed by kernfs id (= cgroup inode)
BPF_RINGBUF_OUTPUT(events, 8);             // 8 pages

int on_charge(struct pt_regs *ctx, struct mem_cgroup *memcg, gfp_t gfp, unsigned int nr_pages)
{
    int zero = 0;
    u64 *n = total.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);

    u64 cgid = memcg->css.cgroup->kn->id;
    u64 usage = memcg->memory.usage.counter;   // pages, before this charge
    if (cgid != TARGET)
        return 0;

    struct stats init = {}, *s = per_cgroup.lookup_or_try_init(&cgid, &init);
    if (!s)
        return 0;
    __sync_fetch_and_add(&s->hits, 1);
    __sync_fetch_and_add(&s->pages, nr_pages);
    if (usage > s->max_usage)
        s->max_usage = usage;

    struct event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        __sync_fetch_and_add(&s->drops, 1);
        return 0;
    }
    e->cgid = cgid;
    e->usage = usage;
    e->nr_pages = nr_pages;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    events.ringbuf_submit(e, 0);
    return 0;
}
"""


def charge_function():
    names = set()
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in CANDIDATES:
                names.add(parts[2])
    for name in CANDIDATES:
        if name in names:
            return name
    sys.exit(f"bcc-smoke: none of {CANDIDATES} in /proc/kallsyms")


def make_cgroup():
    if os.environ.get("GUEST_CGROUP") == "v1":
        cg, limit_file = "/sys/fs/cgroup/memory/smoke", "memory.limit_in_bytes"
    else:
        cg, limit_file = "/sys/fs/cgroup/smoke", "memory.max"
    os.makedirs(cg, exist_ok=True)
    with open(os.path.join(cg, limit_file), "w") as f:
        f.write(str(256 << 20))
    return cg


def main():
    fn = charge_function()
    cg = make_cgroup()
    ino = os.stat(cg).st_ino

    t = time.monotonic()
    b = BPF(text=PROGRAM, cflags=[f"-DTARGET={ino}ULL"])
    t_compile = time.monotonic() - t
    t = time.monotonic()
    b.attach_kprobe(event=fn, fn_name="on_charge")
    t_attach = time.monotonic() - t

    received = []
    b["events"].open_ring_buffer(lambda ctx, data, size: received.append(b["events"].event(data)))
    ring_fd = b["events"].map_fd
    ep = select.epoll()
    ep.register(ring_fd, select.EPOLLIN)
    idle = ep.poll(0)  # nothing charged to the (empty) cgroup yet

    def enter_cgroup():
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    t = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", WORKLOAD], preexec_fn=enter_cgroup)
    ready = ep.poll(30)  # the first event of the child should wake us
    t_wake = time.monotonic() - t
    rc = child.wait()
    b.ring_buffer_consume()
    ep.close()

    hits = b["total"][0].value
    st = b["per_cgroup"].get(b["per_cgroup"].Key(ino))
    kn_ids = [k.value for k in b["per_cgroup"]]
    b.detach_kprobe(event=fn)
    peak_file = "memory.max_usage_in_bytes" if cg.endswith("memory/smoke") else "memory.peak"
    with open(os.path.join(cg, peak_file)) as f:
        peak = int(f.read())
    os.rmdir(cg)

    print(f"bcc-smoke: probe on {fn}; workload exit {rc}")
    print(
        f"bcc-smoke: timings: import {t_import:.2f} s, compile+load {t_compile:.2f} s, "
        f"attach {t_attach:.3f} s, first ringbuf wakeup {t_wake:.3f} s after spawn"
    )
    print(
        f"bcc-smoke: charges: {hits} in all cgroups; for {cg}: "
        f"{st.hits if st else 0} hits, {st.pages if st else 0} pages, "
        f"max usage seen by the probe {(st.max_usage * 4096 / 2**20) if st else 0:.1f} MiB "
        f"(before a charge; the cgroup's {peak_file}: {peak / 2**20:.1f} MiB)"
    )
    print(f"bcc-smoke: kn->id {kn_ids} vs st_ino {ino}")
    first = received[0] if received else None
    print(
        f"bcc-smoke: ring buffer: {len(received)} events, {st.drops if st else '?'} dropped; "
        f"epoll before workload {idle}, during {ready}"
    )
    if first:
        print(
            f"bcc-smoke: first event: cgid {first.cgid} pid {first.pid} "
            f"nr_pages {first.nr_pages} usage {first.usage} pages"
        )

    checks = {
        "workload ran": rc == 0,
        "probe hit": hits > 0,
        "probe hit the child cgroup": st is not None and st.hits > 0,
        "kn->id == st_ino": kn_ids == [ino],
        "usage read": st is not None and st.max_usage > 0,
        "ring buffer events": first is not None and first.cgid == ino,
        "map fd idle before": idle == [],
        "map fd EPOLLIN": any(fd == ring_fd and ev & select.EPOLLIN for fd, ev in ready),
    }
    failed = [name for name, ok in checks.items() if not ok]
    print("bcc-smoke: " + ("OK" if not failed else "FAILED: " + ", ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
