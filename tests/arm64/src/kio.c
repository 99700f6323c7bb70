/* kio.c -- arm64 end-to-end target that spends most of its time in the kernel.
 *
 *   kio [SECONDS(0=forever) [TICK_US]]
 *
 * Hot paths (every function is noinline,noclone; the program is built with
 * -mbranch-protection=pac-ret and SFrame V3, see tests/arm64/build_targets.sh):
 *   main -> io_loop -> zero_fill -> read (libc, through the PLT) -> kernel
 *       (clearing a 256 KiB user buffer: most samples are taken in kernel mode)
 *   main -> io_loop -> null_sink -> write (libc) -> kernel
 *   worker thread: worker -> crunch -> spin                  (user mode)
 *   SIGPROF interval timer: tick_handler -> tick_io -> write (libc) -> kernel,
 *       on top of whatever the thread was doing (through the signal frame)
 * so a sample in kernel mode must still carry the user stack down to _start or clone3.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define NI __attribute__((noinline, noclone))
#define BUF (256 * 1024)

volatile unsigned long sink;
static volatile int done;
static int zero_fd, null_fd;
static char buf[BUF];

NI long zero_fill(char *p, size_t n) { long r = read(zero_fd, p, n); sink += (unsigned long)r; return r; }
NI long null_sink(const char *p, size_t n) { long r = write(null_fd, p, n); sink ^= (unsigned long)r; return r; }

NI void io_loop(void)
{
    zero_fill(buf, BUF);
    buf[sink & (BUF - 1)] = (char)sink;
    null_sink(buf, 4096);
}

NI unsigned long spin(unsigned long x)
{
    for (int i = 0; i < 20000; i++)
        x = x * 2862933555777941757UL + 3037000493UL;
    return x;
}
NI unsigned long crunch(unsigned long x) { unsigned long r = spin(x + 1); sink += r; return r ^ 5; }

static void *worker(void *arg)
{
    unsigned long i = (unsigned long)arg;
    while (!done)
        sink += crunch(i++);
    return NULL;
}

NI void tick_io(int sig) { char c = (char)sig; sink += (unsigned long)write(null_fd, &c, 1); }
NI void tick_handler(int sig) { tick_io(sig); sink++; }

int main(int argc, char **argv)
{
    long seconds = argc > 1 ? atol(argv[1]) : 0;
    long tick_us = argc > 2 ? atol(argv[2]) : 3000;
    zero_fd = open("/dev/zero", O_RDONLY);
    null_fd = open("/dev/null", O_WRONLY);
    if (zero_fd < 0 || null_fd < 0)
        return 2;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tick_handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    if (tick_us > 0) {
        struct itimerval it = { { 0, tick_us }, { 0, tick_us } };
        setitimer(ITIMER_PROF, &it, NULL);
    }

    pthread_t th;
    pthread_create(&th, NULL, worker, (void *)3);
    time_t end = time(NULL) + seconds;
    while (seconds == 0 || time(NULL) < end)
        io_loop();
    done = 1;
    pthread_join(th, NULL);
    return (int)(sink & 1);
}
