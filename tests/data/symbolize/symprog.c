/* Symbol shapes for tests/unit/test_symbolize.py (x86_64 only: it has inline asm).
 * Local, global, weak, alias-of-local, IFUNC, cold-split, zero-size asm FUNC, sized
 * asm NOTYPE and a function symbol nested inside another. */
#include <stdio.h>
#include <stdlib.h>

static int __attribute__((noinline)) static_helper(int x) { return x * 3 + 1; }

int __attribute__((noinline)) global_fn(int x) { return static_helper(x) + 2; }

__attribute__((weak, noinline)) int weak_fn(int x) { return x - 7; }

static int __attribute__((noinline, used)) aliased_impl(int x) { return x ^ 0x55; }
int public_alias(int x) __attribute__((alias("aliased_impl")));

static int impl_a(void) { return 11; }
static int (*resolve_ifn(void))(void) { return impl_a; }
int ifn(void) __attribute__((ifunc("resolve_ifn")));

__attribute__((noinline)) int maybe_fail(int x) {
    if (__builtin_expect(x == 12345, 0)) {
        fprintf(stderr, "unexpected %d\n", x);
        abort();
    }
    return x + 1;
}

int asm_nosize(void);
int asm_notype(void);
int asm_outer(void);
int asm_inner(void);
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl asm_nosize\n"
    ".type asm_nosize, @function\n"
    "asm_nosize:\n"
    "  mov $1, %eax\n"
    "  nop\n"
    "  nop\n"
    "  ret\n"
    ".globl asm_notype\n"
    "asm_notype:\n"
    "  mov $2, %eax\n"
    "  ret\n"
    ".size asm_notype, .-asm_notype\n"
    ".p2align 4\n"
    ".globl asm_outer\n"
    ".type asm_outer, @function\n"
    "asm_outer:\n"
    "  mov $3, %eax\n"
    "  jmp 1f\n"
    ".globl asm_inner\n"
    ".type asm_inner, @function\n"
    "asm_inner:\n"
    "  mov $4, %eax\n"
    "  ret\n"
    ".size asm_inner, .-asm_inner\n"
    "1:\n"
    "  nop\n"
    "  nop\n"
    "  ret\n"
    ".size asm_outer, .-asm_outer\n");

int main(int argc, char **argv) {
    (void)argv;
    int v = global_fn(argc) + weak_fn(argc) + public_alias(argc) + ifn() + maybe_fail(argc);
    v += asm_nosize() + asm_notype() + asm_outer() + asm_inner();
    printf("%d\n", v);
    return 0;
}
