// The charge probe as a libbpf CO-RE object, built ahead of time (make, the wheel, the image)
// and loaded by oomhero/sources/ebpf/core.py: no compiler at run time, one .o for every kernel
// with BTF. The check itself is shared with the bcc build in memcg_threshold.h.
//
// Three programs, of which the loader loads one: fentry on try_charge_memcg (a BPF trampoline,
// cheaper than a kprobe), else a kprobe on try_charge_memcg (5.15+) or try_charge (before).

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
    __type(value, struct last_charge);
} last_charges SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 16 * 4096);
} events SEC(".maps");

// One cgroup of the charged one's line: report a crossing of its armed thresholds, if any.
static __always_inline void check(struct mem_cgroup *memcg, unsigned int nr_pages)
{
    __u64 id = BPF_CORE_READ(memcg, css.cgroup, kn, id);
    struct watch *watch = bpf_map_lookup_elem(&watches, &id);
    if (!watch || !watch->armed)
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

// try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages), and
// try_charge() before 5.15 with the same arguments: the charged cgroup, then its ancestors.
static __always_inline int on_charge(struct mem_cgroup *memcg, unsigned int nr_pages)
{
    __u32 zero = 0;
    struct last_charge *seen = bpf_map_lookup_elem(&last_charges, &zero);
    __u64 usage = BPF_CORE_READ(memcg, memory.usage.counter);
    if (!seen || seen_before(seen, (__u64)memcg, usage, nr_pages))
        return 0;
    for (int depth = 0; depth < MAX_DEPTH && memcg; depth++) {
        check(memcg, nr_pages);
        struct cgroup_subsys_state *parent = BPF_CORE_READ(memcg, css.parent);
        // container_of: css is mem_cgroup's first member, wherever the kernel puts it.
        memcg = parent ? (void *)parent - bpf_core_field_offset(struct mem_cgroup, css) : NULL;
    }
    return 0;
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
