// A kprobe on the memcg charge path (try_charge_memcg, or try_charge on older kernels) that
// checks each watched cgroup's thresholds in the kernel, at the moment of the charge.
//
// User space (oomhero/ebpf.py) fills `watches`, keyed by the cgroup's id (its directory's
// inode number), with the warning and critical thresholds in pages and which of them are
// armed. A charge that takes usage to an armed threshold disarms it and pushes one event; user
// space re-arms a level once the policy's hysteresis lets it go. Charges that cross nothing
// cost a hash lookup and two reads: no event, no lock.
//
// Compile-time constants: PIDNS_DEV and PIDNS_INO name oomhero's PID namespace; SIGNAL_ON_CRITICAL
// (for --bpf-signal) makes the probe itself send that
// signal to the task that is charging, before the allocation returns to user space.

#include <linux/memcontrol.h>
#include <linux/kernfs.h>

#define ARMED_WARNING 1
#define ARMED_CRITICAL 2

struct watch {
    u64 warning_pages;
    u64 critical_pages;
    u32 armed;
    u32 pad;
};

struct event {
    u64 cgroup_id;
    u64 usage_pages;  // usage including the pages being charged
    u64 ktime_ns;     // bpf_ktime_get_ns(): CLOCK_MONOTONIC
    u32 level;        // 1 warning, 2 critical
    u32 pid;          // the charging process, as oomhero's PID namespace numbers it (0: not in it)
    u32 signalled;    // the probe sent SIGNAL_ON_CRITICAL itself
    u32 pad;
};

BPF_HASH(watches, u64, struct watch, 4096);
BPF_RINGBUF_OUTPUT(events, 16);

// try_charge_memcg(struct mem_cgroup *memcg, gfp_t gfp_mask, unsigned int nr_pages), and
// try_charge() before 5.15 with the same arguments.
int on_charge(struct pt_regs *ctx, struct mem_cgroup *memcg, gfp_t gfp_mask,
              unsigned int nr_pages)
{
    u64 id = memcg->css.cgroup->kn->id;
    struct watch *watch = watches.lookup(&id);
    if (!watch)
        return 0;
    u32 armed = watch->armed;
    if (!armed)
        return 0;
    u64 usage = memcg->memory.usage.counter + nr_pages;
    u32 level = 0;
    if ((armed & ARMED_CRITICAL) && usage >= watch->critical_pages)
        level = 2;
    else if ((armed & ARMED_WARNING) && usage >= watch->warning_pages)
        level = 1;
    if (!level)
        return 0;
    // Fired: a critical crossing also passes warning on the way.
    watch->armed = level == 2 ? 0 : (armed & ~ARMED_WARNING);

    struct event *event = events.ringbuf_reserve(sizeof(struct event));
    if (!event)
        return 0;
    event->cgroup_id = id;
    event->usage_pages = usage;
    event->ktime_ns = bpf_ktime_get_ns();
    event->level = level;
    // PIDNS_DEV/PIDNS_INO: oomhero's PID namespace (a sidecar's is the pod's, not the host's).
    struct bpf_pidns_info ns = {};
    event->pid = bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)) ? 0 : ns.tgid;
    event->signalled = 0;
#if SIGNAL_ON_CRITICAL
    if (level == 2 && bpf_send_signal(SIGNAL_ON_CRITICAL) == 0)
        event->signalled = 1;
#endif
    events.ringbuf_submit(event, 0);
    return 0;
}
