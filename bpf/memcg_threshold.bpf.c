// The charge probe as a libbpf CO-RE object, built ahead of time (make, the wheel, the image)
// and loaded by oomhero/sources/ebpf/core.py: no compiler at run time, one .o for every kernel
// with BTF. The check itself is shared with the bcc build in memcg_threshold.h.
//
// Five programs, of which the loader loads one. First choice: page_counter_try_charge, which
// a memcg calls once per charge batch (64 pages, refilling its per-CPU stock), by fentry (a BPF
// trampoline, cheaper than a kprobe), else by kprobe. Where that cannot attach: the per-page
// try_charge_memcg (5.15+; try_charge before), fentry or kprobe.

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "memcg_threshold.h"

char LICENSE[] SEC("license") = "GPL";  // bpf_send_signal and the kprobe helpers need it

// Set by the loader before load (.rodata, frozen: the verifier sees constants). The layout is
// mirrored in core.py, which checks the section's size.
const volatile struct {
    __u64 pidns_dev;  // oomhero's PID namespace, as bpf_get_ns_current_pid_tgid() wants it
    __u64 pidns_ino;
    __u32 signal_on_critical;  // --bpf-signal: the critical signal's number, else 0
    __u32 pad;
} settings = {};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u64);
    __type(value, struct watch);
} watches SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct seen);
} seen SEC(".maps");

// Bumped by user space after it adds or removes a watch: the per-CPU lines are stale then.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} generation SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 16 * 4096);
} events SEC(".maps");

// Never used: a ring buffer's definition names no record type, so this puts struct event in the
// object's BTF, where user space's mirror is checked (bpf/build.py). A .bss global: 8 bytes.
struct event *event_layout = NULL;

// This CPU's entry of `seen`, with the call counted.
static __always_inline struct seen *count_call(void)
{
    __u32 zero = 0;
    struct seen *mine = bpf_map_lookup_elem(&seen, &zero);
    if (mine)
        mine->calls++;
    return mine;
}

// The mem_cgroup whose `memory` member `counter` is, or NULL when it is another page counter
// (v1's memsw, kmem and tcpmem, swap, hugetlb's: page_counter_try_charge serves them all).
// The candidate's css must be what its own cgroup holds as its memory css.
static __always_inline struct mem_cgroup *memory_owner(struct page_counter *counter)
{
    struct mem_cgroup *memcg = (void *)counter - bpf_core_field_offset(struct mem_cgroup, memory);
    struct cgroup *cgroup = BPF_CORE_READ(memcg, css.cgroup);
    __u64 id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
    struct cgroup_subsys_state *css = NULL;
    if (!cgroup)
        return NULL;
    bpf_probe_read_kernel(&css, sizeof(css),
                          (void *)cgroup + bpf_core_field_offset(struct cgroup, subsys) +
                              id * sizeof(css));
    return (void *)css == (void *)memcg + bpf_core_field_offset(struct mem_cgroup, css) ? memcg
                                                                                       : NULL;
}

static __always_inline __u64 cgroup_id_of(struct mem_cgroup *memcg)
{
    return BPF_CORE_READ(memcg, css.cgroup, kn, id);
}

// A watched cgroup of the charged one's line: report a crossing of its armed thresholds.
static __always_inline void check(struct mem_cgroup *memcg, __u64 id, struct watch *watch,
                                  unsigned long nr_pages)
{
    if (!watch->armed)
        return;
    __u64 usage = BPF_CORE_READ(memcg, memory.usage.counter) + nr_pages;  // pages, not bytes
    __u32 level = watch_crossed(watch, usage);
    if (!level)
        return;
    struct event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
    if (!event)
        return;
    event_fill(event, id, usage, level, settings.pidns_dev, settings.pidns_ino,
               settings.signal_on_critical);
    bpf_ringbuf_submit(event, 0);
}

// The charged cgroup (``id``), then its ancestors: each watched one checked and remembered in
// this CPU's line.
static __always_inline void walk(struct seen *mine, struct mem_cgroup *memcg, __u64 id,
                                 __u64 generation_now, unsigned long nr_pages)
{
    __u64 found = 0;
    mine->line_memcg = (__u64)memcg;
    mine->line_id = id;
    mine->line_generation = generation_now;
    for (int depth = 0; depth < MAX_DEPTH && memcg; depth++) {
        if (depth)
            id = cgroup_id_of(memcg);
        struct watch *watch = bpf_map_lookup_elem(&watches, &id);
        if (watch) {
            check(memcg, id, watch, nr_pages);
            if (found < LINE_WATCHED) {
                mine->watched_memcg[found] = (__u64)memcg;
                mine->watched_id[found] = id;
            }
            found++;
        }
        struct cgroup_subsys_state *parent = BPF_CORE_READ(memcg, css.parent);
        // container_of: css is mem_cgroup's first member, wherever the kernel puts it.
        memcg = parent ? (void *)parent - bpf_core_field_offset(struct mem_cgroup, css) : NULL;
    }
    mine->line_watched = found;
    if (found > LINE_WATCHED)
        mine->line_memcg = 0;  // too many to remember: walked at every charge
}

// Whether this CPU's line is the charged cgroup's, as it stands: then its watched levels are
// checked without a walk.
static __always_inline int from_line(struct seen *mine, __u64 memcg, __u64 id,
                                     __u64 generation_now, unsigned long nr_pages)
{
    if (mine->line_memcg != memcg || mine->line_id != id ||
        mine->line_generation != generation_now)
        return 0;
    for (int i = 0; i < LINE_WATCHED; i++) {
        if (i >= mine->line_watched)
            break;
        __u64 watched = mine->watched_id[i];
        struct watch *watch = bpf_map_lookup_elem(&watches, &watched);
        if (watch)
            check((void *)mine->watched_memcg[i], watched, watch, nr_pages);
    }
    return 1;
}

static __always_inline __u64 current_generation(void)
{
    __u32 zero = 0;
    __u64 *now = bpf_map_lookup_elem(&generation, &zero);
    return now ? *now : 0;
}

// page_counter_try_charge(struct page_counter *counter, unsigned long nr_pages, fail): once
// per batch, for every kind of page counter; only a memcg's `memory` counter is checked.
static __always_inline int on_counter_charge(struct page_counter *counter, unsigned long nr_pages)
{
    struct seen *mine = count_call();
    if (!mine)
        return 0;
    // The line is checked before the counter: a memsw (or other) counter's candidate is never
    // the address of a mem_cgroup whose memory counter was validated.
    struct mem_cgroup *memcg = (void *)counter - bpf_core_field_offset(struct mem_cgroup, memory);
    __u64 id = cgroup_id_of(memcg);
    __u64 generation_now = current_generation();
    if (from_line(mine, (__u64)memcg, id, generation_now, nr_pages) || !memory_owner(counter))
        return 0;
    walk(mine, memcg, id, generation_now, nr_pages);
    return 0;
}

// try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages), and
// try_charge() before 5.15 with the same arguments: once per page, most served by the stock.
static __always_inline int on_charge(struct mem_cgroup *memcg, unsigned int nr_pages)
{
    struct seen *mine = count_call();
    __u64 usage = BPF_CORE_READ(memcg, memory.usage.counter);
    if (!mine || seen_before(mine, (__u64)memcg, usage, nr_pages))
        return 0;
    __u64 id = cgroup_id_of(memcg);
    __u64 generation_now = current_generation();
    if (!from_line(mine, (__u64)memcg, id, generation_now, nr_pages))
        walk(mine, memcg, id, generation_now, nr_pages);
    return 0;
}

SEC("fentry/page_counter_try_charge")
int BPF_PROG(counter_fentry, struct page_counter *counter, unsigned long nr_pages,
             struct page_counter **fail)
{
    return on_counter_charge(counter, nr_pages);
}

SEC("kprobe/page_counter_try_charge")
int BPF_KPROBE(counter_kprobe, struct page_counter *counter, unsigned long nr_pages)
{
    return on_counter_charge(counter, nr_pages);
}

SEC("fentry/try_charge_memcg")
int BPF_PROG(charge_fentry, struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages)
{
    return on_charge(memcg, nr_pages);
}

SEC("kprobe/try_charge_memcg")
int BPF_KPROBE(charge_kprobe, struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages)
{
    return on_charge(memcg, nr_pages);
}

SEC("kprobe/try_charge")
int BPF_KPROBE(charge_kprobe_old, struct mem_cgroup *memcg, gfp_t gfp_mask,
               unsigned int nr_pages)
{
    return on_charge(memcg, nr_pages);
}
