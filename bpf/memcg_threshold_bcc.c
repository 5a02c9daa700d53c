// The charge probe for bcc, compiled at start against the kernel's headers: the fallback for
// kernels without BTF, or where the CO-RE object (memcg_threshold.bpf.c) is refused.
//
// A kprobe on page_counter_try_charge (once per charge batch), or where that cannot attach on
// try_charge_memcg (try_charge on older kernels; once per page); the check itself is shared
// with the CO-RE build in memcg_threshold.h. Compile-time constants: PIDNS_DEV and PIDNS_INO
// name oomhero's PID namespace; SIGNAL_ON_CRITICAL (for --bpf-signal, else 0).

#include <linux/memcontrol.h>
#include <linux/kernfs.h>

#include "memcg_threshold.h"

BPF_HASH(watches, u64, struct watch, 4096);
BPF_PERCPU_ARRAY(seen, struct seen, 1);
BPF_RINGBUF_OUTPUT(events, 16);

// This CPU's entry of `seen`, with the call counted.
static __always_inline struct seen *count_call(void)
{
    u32 zero = 0;
    struct seen *mine = seen.lookup(&zero);
    if (mine)
        mine->calls++;
    return mine;
}

// One cgroup of the charged one's line: report a crossing of its armed thresholds, if any.
static __always_inline void check(struct mem_cgroup *memcg, unsigned long nr_pages)
{
    u64 id = memcg->css.cgroup->kn->id;
    struct watch *watch = watches.lookup(&id);
    if (!watch || !watch->armed)
        return;
    u64 usage = memcg->memory.usage.counter + nr_pages;  // pages, not bytes
    u32 level = watch_crossed(watch, usage);
    if (!level)
        return;
    struct event *event = events.ringbuf_reserve(sizeof(struct event));
    if (!event)
        return;
    event_fill(event, id, usage, level, PIDNS_DEV, PIDNS_INO, SIGNAL_ON_CRITICAL);
    events.ringbuf_submit(event, 0);
}

// The charged cgroup, then its ancestors: the hierarchy the kernel charges.
static __always_inline void walk(struct mem_cgroup *memcg, unsigned long nr_pages)
{
    for (int depth = 0; depth < MAX_DEPTH && memcg; depth++) {
        check(memcg, nr_pages);
        struct cgroup_subsys_state *parent = NULL;
        bpf_probe_read_kernel(&parent, sizeof(parent), &memcg->css.parent);
        memcg = parent ? container_of(parent, struct mem_cgroup, css) : NULL;
    }
}

// page_counter_try_charge(struct page_counter *counter, unsigned long nr_pages, fail): every
// kind of page counter comes here; only a memcg's `memory` counter (its css is what its own
// cgroup holds as the memory css) is checked. Offsets by hand, not container_of: bcc's
// rewriter garbles that macro around a probed pointer.
int on_counter_charge(struct pt_regs *ctx, struct page_counter *counter, unsigned long nr_pages)
{
    count_call();
    void *memcg = (void *)counter - offsetof(struct mem_cgroup, memory);
    struct cgroup *cgroup = NULL;
    struct cgroup_subsys_state *css = NULL;
    bpf_probe_read_kernel(&cgroup, sizeof(cgroup),
                          memcg + offsetof(struct mem_cgroup, css) +
                              offsetof(struct cgroup_subsys_state, cgroup));
    if (!cgroup)
        return 0;
    bpf_probe_read_kernel(&css, sizeof(css),
                          (void *)cgroup + offsetof(struct cgroup, subsys) +
                              memory_cgrp_id * sizeof(css));
    if ((void *)css == memcg + offsetof(struct mem_cgroup, css))
        walk(memcg, nr_pages);
    return 0;
}

// try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages), and
// try_charge() before 5.15 with the same arguments: once per page, most served by the stock.
int on_charge(struct pt_regs *ctx, struct mem_cgroup *memcg, gfp_t gfp_mask,
              unsigned int nr_pages)
{
    struct seen *mine = count_call();
    if (!mine || seen_before(mine, (u64)memcg, memcg->memory.usage.counter, nr_pages))
        return 0;
    walk(memcg, nr_pages);
    return 0;
}
