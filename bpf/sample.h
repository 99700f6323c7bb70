/* sample.h -- the record one sampling interrupt writes; shared by every BPF file.
 *
 * profiler/capture/layout.py mirrors this struct with ctypes, and
 * tests/unit/test_bpf_layout.py compiles this header with the host C compiler to
 * check that every offset and the size agree.  Change both together.
 *
 * STACK_BYTES (the --stack-size limit) and MAX_KSTACK come from the loader as -D flags.
 */
#ifndef SFRAME_PROF_SAMPLE_H
#define SFRAME_PROF_SAMPLE_H

#ifndef STACK_BYTES
#define STACK_BYTES 16384
#endif
#ifndef MAX_KSTACK
#define MAX_KSTACK 127
#endif
/* User stack is copied in CHUNK-byte pieces aligned in user memory, so a piece never
 * straddles a page and the copy stops exactly at the first unmapped page. */
#define CHUNK 512

/* flags */
#define SAMPLE_F_KERNEL_MODE 0x1   /* the tick interrupted kernel mode */
#define SAMPLE_F_NO_USER 0x2       /* no user registers (kernel thread) */

struct sframe_sample {
    __u32 pid;                 /* thread group id, as /proc sees it */
    __u32 tid;
    __u64 time_ns;             /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    __u32 cpu;
    __u32 flags;
    char comm[16];
    __u64 pc;                  /* the task's saved user registers */
    __u64 sp;
    __u64 fp;                  /* rbp / x29 */
    __u64 lr;                  /* x30 on arm64, 0 on x86_64 */
    __s32 kstack_bytes;        /* bpf_get_stack() result: bytes, or a negative errno */
    __u32 stack_len;           /* valid bytes in stack[] */
    __u64 kstack[MAX_KSTACK];
    __u8 stack[STACK_BYTES + CHUNK];  /* + CHUNK: lets the verifier bound each read */
};

/* A target forked: the child is a target now (see sample.bpf.c). */
struct fork_event {
    __u32 parent;              /* tgid of the forking process */
    __u32 child;               /* pid of the new process */
};

/* counters[] indexes */
#define CNT_HITS 0          /* interrupts in a target process */
#define CNT_SUBMITTED 1
#define CNT_LOST 2          /* ring/perf buffer full: sample dropped */
#define CNT_SHORT_COPY 3    /* stack copy stopped before STACK_BYTES */
#define CNT_NO_USER 4       /* no user registers */
#define CNT_KERNEL_MODE 5
#define NUM_COUNTERS 8

#endif
