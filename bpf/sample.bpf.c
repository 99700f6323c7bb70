/* sample.bpf.c -- perf_event program: at each sampling interrupt of a target
 * process, copy the task's user registers, the top STACK_BYTES of its user stack and
 * its kernel call chain into one record.  No unwinding happens here: the Python
 * backend unwinds the bytes with the mapped files' .sframe / .eh_frame tables.
 *
 * Loaded by profiler/capture/bcc_source.py with bcc, configured by -D flags:
 *   ARCH_ARM64 or ARCH_X86_64   which register layout to read
 *   STACK_BYTES, MAX_KSTACK     record size (see sample.h)
 *   USE_RINGBUF, RINGBUF_PAGES  ring buffer (kernel >= 5.8) or per-CPU perf buffer
 *   WAKEUP_EVERY                ring buffer: wake the reader every this many samples
 *                               of a CPU (it also drains the buffer on a timer)
 */
#include "sample.h"

/* No kernel header of our own: bcc's helpers.h (always included) brings the basic
 * types and the BPF uapi, and the few layouts read here are declared below.  With
 * <uapi/linux/ptrace.h> (which brings the kernel's asm/ptrace.h under __KERNEL__) and
 * <uapi/linux/bpf_perf_event.h>, clang took four times as long on this file (1.7 s of
 * CPU against 0.45 s), the largest part of sframe-prof's start-up; the code it
 * generates is the same, byte for byte (x86_64 and arm64, Linux 6.1 headers).  The
 * names are our own, so that no kernel header can collide with them.
 *
 * sfp_regs: the first fields of the kernel's struct pt_regs (arch/.../asm/ptrace.h),
 * the task's saved user registers; only their addresses are taken, for
 * bpf_probe_read_kernel().  sfp_perf_ctx: struct bpf_perf_event_data
 * (uapi/linux/bpf_perf_event.h), whose regs are bpf_user_pt_regs_t: struct pt_regs on
 * x86_64, struct user_pt_regs (the same first fields) on arm64. */
#ifdef ARCH_ARM64
struct sfp_regs {
    __u64 regs[31];
    __u64 sp;
    __u64 pc;
    __u64 pstate;
};
#else
struct sfp_regs {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
    unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
#endif
struct sfp_perf_ctx {
    struct sfp_regs regs;
    __u64 sample_period;
    __u64 addr;
};

BPF_HASH(targets, u32, u8, 4096);          /* tgids to sample */
BPF_ARRAY(config, u32, 3);                 /* [0] system-wide, [1] our own tgid,
                                              [2] follow children of targets */
BPF_ARRAY(counters, u64, NUM_COUNTERS);

#if USE_RINGBUF
#ifndef WAKEUP_EVERY
#define WAKEUP_EVERY 1
#endif
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(forks, 16);
BPF_PERCPU_ARRAY(since_wakeup, u32, 1);
#else
BPF_PERF_OUTPUT(events);
BPF_PERF_OUTPUT(forks);
BPF_PERCPU_ARRAY(scratch, struct sframe_sample, 1);
#endif

static __always_inline void count(int i)
{
    u64 *v = counters.lookup(&i);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline int wanted(u32 tgid)
{
    int k0 = 0, k1 = 1;
    u32 *all = config.lookup(&k0);
    u32 *self = config.lookup(&k1);
    if (tgid == 0 || (self && *self == tgid))
        return 0;                       /* idle task, or the profiler itself */
    if (all && *all)
        return 1;
    return targets.lookup(&tgid) != NULL;
}

int on_sample(struct sfp_perf_ctx *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!wanted(tgid))
        return 0;
    count(CNT_HITS);

#if USE_RINGBUF
    struct sframe_sample *s = events.ringbuf_reserve(sizeof(struct sframe_sample));
    if (!s) {
        count(CNT_LOST);
        return 0;
    }
#else
    int zero = 0;
    struct sframe_sample *s = scratch.lookup(&zero);
    if (!s)
        return 0;
#endif
    s->pid = tgid;
    s->tid = (u32)id;
    s->time_ns = bpf_ktime_get_ns();
    s->cpu = bpf_get_smp_processor_id();
    s->flags = 0;
    s->lr = 0;
    bpf_get_current_comm(s->comm, sizeof(s->comm));

    /* The interrupted mode decides whether a kernel chain exists; the user registers
     * always come from the task's saved user state, so a tick in a syscall or a page
     * fault keeps its user stack. */
#ifdef ARCH_ARM64
    if ((ctx->regs.pstate & 0xf) != 0)
        s->flags |= SAMPLE_F_KERNEL_MODE;
#else
    if ((ctx->regs.cs & 3) != 3)
        s->flags |= SAMPLE_F_KERNEL_MODE;
#endif
    if (s->flags & SAMPLE_F_KERNEL_MODE)
        count(CNT_KERNEL_MODE);

    struct sfp_regs *ur = (struct sfp_regs *)bpf_task_pt_regs(
        (struct task_struct *)bpf_get_current_task_btf());
#ifdef ARCH_ARM64
    bpf_probe_read_kernel(&s->pc, 8, &ur->pc);
    bpf_probe_read_kernel(&s->sp, 8, &ur->sp);
    bpf_probe_read_kernel(&s->fp, 8, &ur->regs[29]);
    bpf_probe_read_kernel(&s->lr, 8, &ur->regs[30]);
#else
    bpf_probe_read_kernel(&s->pc, 8, &ur->ip);
    bpf_probe_read_kernel(&s->sp, 8, &ur->sp);
    bpf_probe_read_kernel(&s->fp, 8, &ur->bp);
#endif

    s->kstack_bytes = 0;
    if (s->flags & SAMPLE_F_KERNEL_MODE)
        s->kstack_bytes = bpf_get_stack(ctx, s->kstack, sizeof(s->kstack), 0);

    u32 off = 0;
    u64 sp = s->sp;
    if (sp == 0 || s->pc == 0) {
        s->flags |= SAMPLE_F_NO_USER;
        count(CNT_NO_USER);
        goto done;
    }
    u32 head = (CHUNK - (sp & (CHUNK - 1))) & (CHUNK - 1);
    if (head) {
        if (bpf_probe_read_user(s->stack, head, (void *)sp) != 0)
            goto done;
        off = head;
    }
    for (int i = 0; i < STACK_BYTES / CHUNK; i++) {
        if (off >= STACK_BYTES)
            break;
        if (bpf_probe_read_user(&s->stack[off], CHUNK, (void *)(sp + off)) != 0)
            break;
        off += CHUNK;
    }
done:
    if (off > STACK_BYTES)
        off = STACK_BYTES;
    if (off < STACK_BYTES)
        count(CNT_SHORT_COPY);
    s->stack_len = off;
#if USE_RINGBUF
    /* A wakeup per sample costs the reader a context switch (and this CPU an IPI)
     * per sample; the reader drains the buffer on its own every poll interval, so
     * only every WAKEUP_EVERY-th sample of a CPU wakes it, early enough that the
     * buffer never fills between two polls. */
    {
        int zero = 0;
        u32 *n = since_wakeup.lookup(&zero);
        u64 flags = BPF_RB_FORCE_WAKEUP;
        if (n) {
            if (++*n < WAKEUP_EVERY)
                flags = BPF_RB_NO_WAKEUP;
            else
                *n = 0;
        }
        events.ringbuf_submit(s, flags);
    }
#else
    u32 len = offsetof(struct sframe_sample, stack) + off;
    if (len > sizeof(struct sframe_sample))
        len = sizeof(struct sframe_sample);
    if (events.perf_submit(ctx, s, len) != 0) {
        count(CNT_LOST);
        return 0;
    }
#endif
    count(CNT_SUBMITTED);
    return 0;
}

#if FOLLOW_CHILDREN
/* A target's new processes become targets too (like perf's inherit), so a command
 * that forks workers is profiled whole.  Threads need nothing: they share the tgid.
 * bcc builds `args` from the tracepoint's format file, so the layout is the running
 * kernel's (6.x moved the comm fields to __data_loc strings). */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    int k2 = 2;
    u32 *follow = config.lookup(&k2);
    if (!follow || !*follow)
        return 0;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (targets.lookup(&parent) == NULL)
        return 0;
    u32 child = args->child_pid;
    u8 one = 1;
    targets.update(&child, &one);
    /* Tell user space at once, so a short-lived child gets its parent's maps (a fork
     * copies them) even if it exits before its maps can be read. */
    struct fork_event ev = {.parent = parent, .child = child};
#if USE_RINGBUF
    forks.ringbuf_output(&ev, sizeof(ev), 0);
#else
    forks.perf_submit(args, &ev, sizeof(ev));
#endif
    return 0;
}

/* A followed process that exits leaves the target set, so a long run with many
 * short-lived children never fills it. */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if ((u32)id != tgid)
        return 0;                       /* a thread, not the whole process */
    targets.delete(&tgid);
    return 0;
}
#endif
