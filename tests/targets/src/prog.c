/* prog.c -- call-stack shapes for testing the SFrame unwinder against gdb.
 *
 *   prog [ROUNDS [LEAF_N [THREADS [TICK_US]]]]
 *     ROUNDS   rounds of one_round() in the main thread, 0 = loop forever (default 3)
 *     LEAF_N   iterations of the loop in leaf() (default 1000); a small number makes
 *              random stops fall into prologues, epilogues and PLT stubs
 *     THREADS  0 or 1 worker thread (default 1)
 *     TICK_US  ITIMER_PROF period in microseconds, 0 = no timer (default 0)
 *
 * Built with -DWITH_SHLIB it also calls into libsfpshape.so (shlib.c), which calls
 * back into this program; with -DWITH_DRAP (x86_64) it has a function that gcc
 * compiles with a DRAP register (stack realignment + alloca).
 */
#define _GNU_SOURCE
#include <alloca.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define NI __attribute__((noinline, noclone))
#define DEPTH 60

volatile unsigned long sink;
static volatile int leaf_n = 1000;
static volatile int done;

/* no calls, no frame at -O2 */
NI unsigned long leaf(unsigned long x)
{
    for (int i = 0; i < leaf_n; i++)
        x = x * 2862933555777941757UL + 3037000493UL;
    return x;
}

/* work after each call keeps gcc from turning it into a tail call */
NI unsigned long nest3(unsigned long x) { unsigned long r = leaf(x + 3); sink += r; return r ^ 3; }
NI unsigned long nest2(unsigned long x) { unsigned long r = nest3(x + 2); sink ^= r; return r + 2; }
NI unsigned long nest1(unsigned long x) { unsigned long r = nest2(x + 1); sink += r; return r - 1; }

/* the volatile local and the use of r after the call defeat tail recursion */
NI unsigned long deep(int n, unsigned long x)
{
    volatile unsigned long keep = x;
    if (n == 0)
        return leaf(keep);
    unsigned long r = deep(n - 1, x + 1);
    return r ^ keep;
}

/* indirect call: the pointer is volatile so it cannot be devirtualised */
NI unsigned long hook_target(unsigned long x) { unsigned long r = leaf(x ^ 0xa5); sink += r; return r; }
static unsigned long (*volatile hook)(unsigned long) = hook_target;
NI unsigned long call_hook(unsigned long x) { unsigned long r = hook(x); sink += r; return r + 1; }

/* libc's qsort (through the PLT) calls back into by_value */
NI int by_value(const void *a, const void *b)
{
    unsigned long p = *(const unsigned long *)a, q = *(const unsigned long *)b;
    sink += leaf(p + q) & 1;
    return p < q ? -1 : p > q;
}
NI void sort_some(unsigned long seed)
{
    unsigned long v[24];
    for (int i = 0; i < 24; i++)
        v[i] = (seed + (unsigned long)i) * 40503UL % 997;
    qsort(v, 24, sizeof v[0], by_value);
    sink += v[3];
}

/* frame larger than a page */
NI unsigned long big_frame(unsigned long n)
{
    volatile unsigned char buf[5000];
    buf[n % 5000] = (unsigned char)n;
    unsigned long r = leaf(n + buf[(n * 7) % 5000]);
    return r + buf[0];
}

/* dynamic frame (VLA) */
NI unsigned long vla_frame(unsigned long n)
{
    size_t len = 16 + (n & 127);
    char a[len];
    memset(a, (int)n, len);
    unsigned long r = leaf(n + (unsigned char)a[len - 1]);
    return r + (unsigned char)a[0];
}

#ifdef WITH_DRAP
/* over-aligned local + alloca: gcc keeps the incoming frame in a DRAP register */
NI unsigned long drap_frame(unsigned long n)
{
    __attribute__((aligned(64))) volatile char buf[96];
    char *p = alloca(16 + (n & 63));
    memset(p, (int)n, 16);
    buf[n % 96] = p[1];
    unsigned long r = leaf(n + (unsigned char)buf[(n + 5) % 96]);
    return r + (unsigned char)p[2];
}
#endif

#ifdef WITH_SHLIB
extern unsigned long shl_apply(unsigned long (*cb)(unsigned long), unsigned long x);
#endif

/* signal handlers: raise(SIGUSR1) synchronously, SIGPROF from the interval timer */
NI void usr1_handler(int sig) { sink += nest2((unsigned long)sig); }
NI unsigned long tick_work(unsigned long x) { unsigned long r = leaf(x); sink ^= r; return r; }
NI void tick_handler(int sig) { sink += tick_work((unsigned long)sig) + 1; }

NI void one_round(unsigned long i)
{
    sink += nest1(i);
    sink += deep(DEPTH, i);
    sink += call_hook(i);
    sort_some(i);
    raise(SIGUSR1);
    sink += big_frame(i);
    sink += vla_frame(i);
#ifdef WITH_DRAP
    sink += drap_frame(i);
#endif
#ifdef WITH_SHLIB
    sink += shl_apply(nest3, i);
#endif
}

static void *worker(void *arg)
{
    unsigned long i = (unsigned long)arg;
    while (!done) {
        sink += nest1(i++);
        sink += deep(20, i);
        sink += call_hook(i);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 3;
    if (argc > 2) leaf_n = atoi(argv[2]);
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    long tick_us = argc > 4 ? atol(argv[4]) : 0;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = usr1_handler;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = tick_handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    if (tick_us > 0) {
        struct itimerval it = { { 0, tick_us }, { 0, tick_us } };
        setitimer(ITIMER_PROF, &it, NULL);
    }

    pthread_t th;
    if (threads > 0)
        pthread_create(&th, NULL, worker, (void *)7);
    for (unsigned long i = 0; rounds == 0 || (long)i < rounds; i++)
        one_round(i);
    done = 1;
    if (threads > 0)
        pthread_join(th, NULL);
    return (int)(sink & 1);
}
