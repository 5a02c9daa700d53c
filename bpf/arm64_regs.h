/* arm64's kprobe context for bpf_tracing.h's PT_REGS_PARM* (which read struct user_pt_regs
 * there), in its uapi layout (arch/arm64/include/uapi/asm/ptrace.h), stable across kernels.
 * bpf/vmlinux.h is x86-64's, which has no such struct; CO-RE relocates every kernel struct the
 * probe reads, but a kprobe's registers are the architecture's own. fentry programs need none.
 * bpf/build.py --arch arm64 includes this ahead of the source. */
struct user_pt_regs {
	unsigned long long regs[31];
	unsigned long long sp;
	unsigned long long pc;
	unsigned long long pstate;
};
