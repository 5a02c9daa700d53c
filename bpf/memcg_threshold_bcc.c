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
BPF_ARRAY(generation, u64, 1);  // bumped by user space after it adds or removes a watch
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

// Reads by hand (bpf_probe_read_kernel), not by `->`: bcc rewrites a dereference into a probe
// read only for pointers it traces from the program's arguments, not for one kept in a map.
static __always_inline u64 cgroup_id_of(struct mem_cgroup *memcg)
{
    struct cgroup *cgroup = NULL;
    struct kernfs_node *kn = NULL;
    u64 id = 0;
    bpf_probe_read_kernel(&cgroup, sizeof(cgroup), &memcg->css.cgroup);
    if (cgroup)
        bpf_probe_read_kernel(&kn, sizeof(kn), &cgroup->kn);
    if (kn)
        bpf_probe_read_kernel(&id, sizeof(id), &kn->id);
    return id;
}

// A watched cgroup of the charged one's line: report a crossing of its armed thresholds.
static __always_inline void check(struct mem_cgroup *memcg, u64 id, struct watch *watch,
                                  unsigned long nr_pages)
{
    if (!watch->armed)
        return;
    long pages = 0;
    bpf_probe_read_kernel(&pages, sizeof(pages), &memcg->memory.usage.counter);
    u64 usage = pages + nr_pages;  // pages, not bytes
    u32 level = watch_crossed(watch, usage);
    if (!level)
        return;
    struct event *event = events.ringbuf_reserve(sizeof(struct event));
    if (!event)
        return;
    event_fill(event, id, usage, level, PIDNS_DEV, PIDNS_INO, SIGNAL_ON_CRITICAL);
    events.ringbuf_submit(event, 0);
}

// The charged cgroup (``id``), then its ancestors: each watched one checked and remembered in
// this CPU's line.
static __always_inline void walk(struct seen *mine, struct mem_cgroup *memcg, u64 id,
                                 u64 generation_now, unsigned long nr_pages)
{
    u64 found = 0;
    mine->line_memcg = (u64)memcg;
    mine->line_id = id;
    mine->line_generation = generation_now;
    for (int depth = 0; depth < MAX_DEPTH && memcg; depth++) {
        if (depth)
            id = cgroup_id_of(memcg);
        struct watch *watch = watches.lookup(&id);
        if (watch) {
            check(memcg, id, watch, nr_pages);
            if (found < LINE_WATCHED) {
                mine->watched_memcg[found] = (u64)memcg;
                mine->watched_id[found] = id;
            }
            found++;
        }
        struct cgroup_subsys_state *parent = NULL;
        bpf_probe_read_kernel(&parent, sizeof(parent), &memcg->css.parent);
        memcg = parent ? container_of(parent, struct mem_cgroup, css) : NULL;
    }
    mine->line_watched = found;
    if (found > LINE_WATCHED)
        mine->line_memcg = 0;  // too many to remember: walked at every charge
}

// Whether this CPU's line is the charged cgroup's, as it stands: then its watched levels are
// checked without a walk.
static __always_inline int from_line(struct seen *mine, u64 memcg, u64 id, u64 generation_now,
                                     unsigned long nr_pages)
{
    if (mine->line_memcg != memcg || mine->line_id != id ||
        mine->line_generation != generation_now)
        return 0;
    for (int i = 0; i < LINE_WATCHED; i++) {
        if (i >= mine->line_watched)
            break;
        u64 watched = mine->watched_id[i];
        struct watch *watch = watches.lookup(&watched);
        if (watch)
            check((struct mem_cgroup *)mine->watched_memcg[i], watched, watch, nr_pages);
    }
    return 1;
}

static __always_inline u64 current_generation(void)
{
    int zero = 0;
    u64 *now = generation.lookup(&zero);
    return now ? *now : 0;
}

// page_counter_try_charge(struct page_counter *counter, unsigned long nr_pages, fail): every
// kind of page counter comes here; only a memcg's `memory` counter (its css is what its own
// cgroup holds as the memory css) is checked, and the line before that (a memsw counter's
// candidate is never a mem_cgroup whose memory counter was validated). Offsets by hand, not
// container_of: bcc's rewriter garbles that macro around a probed pointer.
int on_counter_charge(struct pt_regs *ctx, struct page_counter *counter, unsigned long nr_pages)
{
    struct seen *mine = count_call();
    if (!mine)
        return 0;
    void *memcg = (void *)counter - offsetof(struct mem_cgroup, memory);
    u64 id = cgroup_id_of(memcg);
    u64 generation_now = current_generation();
    if (from_line(mine, (u64)memcg, id, generation_now, nr_pages))
        return 0;
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
        walk(mine, memcg, id, generation_now, nr_pages);
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
    u64 id = cgroup_id_of(memcg);
    u64 generation_now = current_generation();
    if (!from_line(mine, (u64)memcg, id, generation_now, nr_pages))
        walk(mine, memcg, id, generation_now, nr_pages);
    return 0;
}
