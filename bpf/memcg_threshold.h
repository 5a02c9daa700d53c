// What the two builds of oomhero's charge probe share: the map value and event layouts (user
// space mirrors them in oomhero/sources/ebpf/common.py) and the decision taken at each charge.
//
// Included by memcg_threshold_bcc.c (bcc, kernel headers) and memcg_threshold.bpf.c (libbpf
// CO-RE, vmlinux.h): the includer provides __u32/__u64, struct bpf_pidns_info and the helpers.

#ifndef MEMCG_THRESHOLD_H
#define MEMCG_THRESHOLD_H

#define ARMED_WARNING 1
#define ARMED_CRITICAL 2

#define LEVEL_WARNING 1
#define LEVEL_CRITICAL 2

// A charge counts in every ancestor too (the hierarchy), so the probe checks the charged cgroup
// and its ancestors up to this many levels: a watched cgroup with sub-groups (a pod, a slice)
// is crossed by its descendants' charges. Deeper nesting is left to polling.
#define MAX_DEPTH 8

// The value of `watches`, keyed by cgroup id (kernfs node id: the directory's inode number).
struct watch {
    __u64 warning_pages;
    __u64 critical_pages;
    __u32 armed;  // ARMED_* bits: user space re-arms once the policy's hysteresis lets go
    __u32 pad;
};

// Watched cgroups in one charged cgroup's line (itself and its ancestors) that the per-CPU
// cache below holds; a line with more is walked at every charge.
#define LINE_WATCHED 4

// The value of the per-CPU `seen` map: what this CPU's probe has seen.
struct seen {
    __u64 calls;  // calls of the probed function: user space checks the probe still runs
    // The charge checked last, for the per-page fallback (try_charge_memcg): most charges are
    // served from the per-CPU stock (a batch of 64 pages charged at once) and move no page
    // counter: with the same cgroup and usage as last time, there is nothing new to check.
    __u64 memcg;  // the charged mem_cgroup's address
    __u64 usage_pages;
    __u64 nr_pages;
    // The charged cgroup's line as last walked: which of its levels are watched. A charge to the
    // same cgroup checks just those, without walking the ancestors again, while `generation`
    // (bumped by user space whenever a watch is added or removed) is the same; the cgroup id
    // tells a mem_cgroup freed and another allocated at the same address apart.
    __u64 line_memcg;
    __u64 line_id;
    __u64 line_generation;
    __u64 line_watched;  // how many of the entries below are set
    __u64 watched_memcg[LINE_WATCHED];
    __u64 watched_id[LINE_WATCHED];
};

// Whether this charge is the last one again (and if not, remember it).
static __always_inline int seen_before(struct seen *seen, __u64 memcg, __u64 usage_pages,
                                       __u64 nr_pages)
{
    if (seen->memcg == memcg && seen->usage_pages == usage_pages && nr_pages <= seen->nr_pages)
        return 1;
    seen->memcg = memcg;
    seen->usage_pages = usage_pages;
    seen->nr_pages = nr_pages;
    return 0;
}

// One record of the `events` ring buffer.
struct event {
    __u64 cgroup_id;
    __u64 usage_pages;  // usage including the pages being charged
    __u64 ktime_ns;     // bpf_ktime_get_ns(): CLOCK_MONOTONIC
    __u32 level;        // LEVEL_*
    __u32 pid;          // the charging process, as oomhero's PID namespace numbers it (0: not in it)
    __u32 signalled;    // the probe sent the critical signal itself
    __u32 pad;
};

// The level an armed threshold of `watch` reaches at `usage_pages` (0: none), disarming what
// fired: the probe reports each crossing once instead of at every later charge.
static __always_inline __u32 watch_crossed(struct watch *watch, __u64 usage_pages)
{
    __u32 armed = watch->armed;
    __u32 level = 0;
    if ((armed & ARMED_CRITICAL) && usage_pages >= watch->critical_pages)
        level = LEVEL_CRITICAL;
    else if ((armed & ARMED_WARNING) && usage_pages >= watch->warning_pages)
        level = LEVEL_WARNING;
    if (level)  // a critical crossing also passes warning on the way
        watch->armed = level == LEVEL_CRITICAL ? 0 : (armed & ~ARMED_WARNING);
    return level;
}

// Fills a reserved event. pidns_dev/pidns_ino name oomhero's PID namespace (a sidecar's is the
// pod's, not the host's); a non-zero signal_on_critical (--bpf-signal) is sent to the charging
// task on a critical crossing, so it is pending before the allocation returns to user space.
static __always_inline void event_fill(struct event *event, __u64 cgroup_id, __u64 usage_pages,
                                       __u32 level, __u64 pidns_dev, __u64 pidns_ino,
                                       __u32 signal_on_critical)
{
    struct bpf_pidns_info ns = {};

    event->cgroup_id = cgroup_id;
    event->usage_pages = usage_pages;
    event->ktime_ns = bpf_ktime_get_ns();
    event->level = level;
    event->pid = bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)) ? 0 : ns.tgid;
    event->signalled = 0;
    event->pad = 0;
    if (signal_on_critical && level == LEVEL_CRITICAL && bpf_send_signal(signal_on_critical) == 0)
        event->signalled = 1;
}

#endif
