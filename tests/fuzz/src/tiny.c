/* tiny.c -- the smallest useful ELF seeds for the ELF and symbol fuzzers: a few
 * functions with .sframe (-Wa,--gsframe), .eh_frame(+_hdr), .symtab and a build ID,
 * and nothing else (-nostdlib), so pyelftools has few sections to walk per input.
 * Built by tests/fuzz/fuzz_elf.py seeds() as a static executable and a shared
 * library, for x86_64 and (with the cross compiler) aarch64. */
static int __attribute__((noinline)) leaf(int x)
{
    volatile int a[4];
    a[0] = x;
    return a[0] * 3;
}

int __attribute__((noinline)) mid(int x) { return leaf(x) + leaf(x + 1); }

void __attribute__((noinline)) _ZN3foo3barEv(void) { (void)mid(1); }

void _start(void)
{
    volatile int r = mid(3);
    for (;;)
        r += mid(r);
}
