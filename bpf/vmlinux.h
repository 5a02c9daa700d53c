// The kernel types memcg_threshold.bpf.c reads, written by hand instead of dumped from one
// kernel's BTF (see README.md): only the fields used, marked preserve_access_index so that
// clang records CO-RE relocations and libbpf fixes every offset against the running kernel's
// /sys/kernel/btf/vmlinux at load. Field names and nesting must match the kernel's; sizes and
// the other fields do not matter. x86-64 only (struct pt_regs).

#ifndef __VMLINUX_H__
#define __VMLINUX_H__  // bpf_tracing.h then uses the kernel's pt_regs names (di, si, ...)

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
typedef unsigned int gfp_t;

// UAPI (include/uapi/linux/bpf.h): stable numbers.
enum bpf_map_type {
    BPF_MAP_TYPE_HASH = 1,
    BPF_MAP_TYPE_ARRAY = 2,
    BPF_MAP_TYPE_PERCPU_ARRAY = 6,
    BPF_MAP_TYPE_RINGBUF = 27,
};

struct bpf_pidns_info {
    __u32 pid;
    __u32 tgid;
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct pt_regs {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
    unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

typedef struct {
    long counter;
} atomic_long_t;

struct kernfs_node {
    __u64 id;  // u64 since 5.5: the inode number of the cgroup's directory
};

struct cgroup_subsys_state;

// The value of memory_cgrp_id depends on the kernel's configuration (which controllers come
// before memory): relocated at load, like the fields.
enum cgroup_subsys_id {
    memory_cgrp_id = 4,
};

struct cgroup {
    struct kernfs_node *kn;
    struct cgroup_subsys_state *subsys[16];  // indexed by cgroup_subsys_id; its length varies
};

struct cgroup_subsys_state {
    struct cgroup *cgroup;
    struct cgroup_subsys_state *parent;  // NULL at the root
};

struct page_counter {
    atomic_long_t usage;  // in pages
};

struct mem_cgroup {
    struct cgroup_subsys_state css;
    struct page_counter memory;
};

#pragma clang attribute pop

#endif
