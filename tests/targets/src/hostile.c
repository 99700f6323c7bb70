/* hostile.c -- a target that does what real processes do to a profiler.
 *
 *   hostile exec SECS PROG ARGS...   spin, then exec PROG (the maps change entirely)
 *   hostile fork SECS                start a short-lived child every 50 ms (churn)
 *   hostile dlopen SECS LIB          dlopen, call into, dlclose LIB in a loop
 *   hostile replace SECS LIB DIR     copy LIB into DIR, dlopen the copy, then replace
 *                                    the file on disk (rename over it) while mapped
 *   hostile threads SECS N           N threads that spin and sleep
 *   hostile badsp SECS               spin with the stack pointer outside any mapping
 *
 * Build: gcc -O2 -g -pthread -Wa,--gsframe -o hostile hostile.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NI __attribute__((noinline, noclone))

volatile unsigned long sink;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

NI unsigned long spin_leaf(unsigned long x)
{
    for (int i = 0; i < 2000; i++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

NI void spin_for(double secs)
{
    double end = now() + secs;
    unsigned long x = 1;
    while (now() < end)
        x = spin_leaf(x);
    sink += x;
}

NI unsigned long callback(unsigned long x) { return spin_leaf(x); }

static int mode_exec(double secs, char **argv)
{
    spin_for(secs);
    execv(argv[0], argv);
    perror("execv");
    return 1;
}

NI void child_work(void) { spin_for(0.1); sink++; }  /* not a tail call */

static int mode_fork(double secs)
{
    double end = now() + secs;
    while (now() < end) {
        pid_t pid = fork();
        if (pid == 0) {
            child_work();
            _exit(0);
        }
        usleep(50000);
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    }
    while (wait(NULL) > 0)
        ;
    return 0;
}

typedef unsigned long (*apply_fn)(unsigned long (*)(unsigned long), unsigned long);

NI static void call_lib(void *h, unsigned long i)
{
    apply_fn apply = (apply_fn)dlsym(h, "shl_apply");
    if (apply)
        for (int k = 0; k < 2000; k++)
            sink += apply(callback, i + k);
}

static int mode_dlopen(double secs, const char *lib)
{
    double end = now() + secs;
    unsigned long i = 0;
    while (now() < end) {
        void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 1;
        }
        call_lib(h, i++);
        dlclose(h);
    }
    return 0;
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out)
        return -1;
    static char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out);
}

static int mode_replace(double secs, const char *lib, const char *dir)
{
    static char path[4096], other[4096];
    snprintf(path, sizeof path, "%s/libreplaced.so", dir);
    snprintf(other, sizeof other, "%s/libreplaced.so.new", dir);
    if (copy_file(lib, path) != 0)
        return 1;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    /* a different file now sits at the mapped path: garbage, not an ELF */
    FILE *f = fopen(other, "wb");
    for (int k = 0; k < 4096; k++)
        fputc(k * 7, f);
    fclose(f);
    rename(other, path);
    double end = now() + secs;
    unsigned long i = 0;
    while (now() < end)
        call_lib(h, i++);
    return 0;
}

static double thread_secs;

static void *thread_body(void *arg)
{
    double end = now() + thread_secs;
    unsigned long x = (unsigned long)arg;
    while (now() < end) {
        x = spin_leaf(x);
        usleep(1000);
    }
    sink += x;
    return NULL;
}

static int mode_threads(double secs, int n)
{
    pthread_t *t = calloc(n, sizeof *t);
    thread_secs = secs;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    int made = 0;
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], &attr, thread_body, (void *)(long)i) == 0)
            made++;
    for (int i = 0; i < made; i++)
        pthread_join(t[i], NULL);
    printf("threads %d\n", made);
    return 0;
}

/* The stack pointer is parked at an unmapped address while a register-only loop runs;
 * nothing touches memory, no signal handler is installed. */
NI void spin_bad_sp(long iters)
{
#if defined(__x86_64__)
    __asm__ volatile(
        "mov %%rsp, %%r12\n\t"
        "mov $0x1000, %%rsp\n\t"
        "1: dec %0\n\t"
        "jnz 1b\n\t"
        "mov %%r12, %%rsp\n\t"
        : "+r"(iters) : : "r12", "memory", "cc");
#elif defined(__aarch64__)
    __asm__ volatile(
        "mov x9, sp\n\t"
        "mov x10, #0x1000\n\t"
        "mov sp, x10\n\t"
        "1: subs %0, %0, #1\n\t"
        "b.ne 1b\n\t"
        "mov sp, x9\n\t"
        : "+r"(iters) : : "x9", "x10", "memory", "cc");
#endif
}

static int mode_badsp(double secs)
{
    double end = now() + secs;
    while (now() < end) {
        spin_bad_sp(20000000);
        spin_for(0.01);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: hostile MODE SECS ...\n");
        return 2;
    }
    double secs = atof(argv[2]);
    if (!strcmp(argv[1], "exec") && argc > 3)
        return mode_exec(secs, argv + 3);
    if (!strcmp(argv[1], "fork"))
        return mode_fork(secs);
    if (!strcmp(argv[1], "dlopen") && argc > 3)
        return mode_dlopen(secs, argv[3]);
    if (!strcmp(argv[1], "replace") && argc > 4)
        return mode_replace(secs, argv[3], argv[4]);
    if (!strcmp(argv[1], "threads") && argc > 3)
        return mode_threads(secs, atoi(argv[3]));
    if (!strcmp(argv[1], "badsp"))
        return mode_badsp(secs);
    fprintf(stderr, "unknown mode\n");
    return 2;
}
