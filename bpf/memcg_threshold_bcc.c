// The charge probe for bcc, compiled at start against the kernel's headers: the fallback for
// kernels without BTF, or where the CO-RE object (memcg_threshold.bpf.c) is refused.
//
// A kprobe on try_charge_memcg (try_charge on older kernels); the check itself is shared with
// the CO-RE build in memcg_threshold.h. Compile-time constants: PIDNS_DEV and PIDNS_INO name
// oomhero's PID namespace; SIGNAL_ON_CRITICAL (for --bpf-signal, else 0).

#include <linux/memcontrol.h>
#include <linux/kernfs.h>

#include "memcg_threshold.h"

BPF_HASH(watches, u64, struct watch, 4096);
BPF_PERCPU_ARRAY(last_charges, struct last_charge, 1);
BPF_RINGBUF_OUTPUT(events, 16);

// One cgroup of the charged one's line: report a crossing of its armed thresholds, if any.
static __always_inline void check(struct mem_cgroup *memcg, unsigned int nr_pages)
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

// try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages), and
// try_charge() before 5.15 with the same arguments: the charged cgroup, then its ancestors.
int on_charge(struct pt_regs *ctx, struct mem_cgroup *memcg, gfp_t gfp_mask,
              unsigned int nr_pages)
{
    u32 zero = 0;
    struct last_charge *seen = last_charges.lookup(&zero);
    if (!seen || seen_before(seen, (u64)memcg, memcg->memory.usage.counter, nr_pages))
        return 0;
    for (int depth = 0; depth < MAX_DEPTH && memcg; depth++) {
        check(memcg, nr_pages);
        struct cgroup_subsys_state *parent = NULL;
        bpf_probe_read_kernel(&parent, sizeof(parent), &memcg->css.parent);
        memcg = parent ? container_of(parent, struct mem_cgroup, css) : NULL;
    }
    return 0;
}
