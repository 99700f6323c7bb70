/* shlib.c -- libsfpshape.so: a second object with its own .sframe.
 * prog (built -DWITH_SHLIB) calls shl_apply(nest3, i) through its PLT; the library
 * calls its exported shl_leaf through its own PLT and calls back into prog. */
#define NI __attribute__((noinline, noclone))

volatile unsigned long shl_sink;

NI unsigned long shl_leaf(unsigned long x)
{
    for (int i = 0; i < 8; i++)
        x = (x << 7) ^ (x >> 3) ^ 0x9e3779b97f4a7c15UL;
    return x;
}

NI static unsigned long shl_mix(unsigned long (*cb)(unsigned long), unsigned long x)
{
    unsigned long r = cb(x ^ 0x33);
    r += shl_leaf(r);
    shl_sink += r;
    return r ^ x;
}

NI unsigned long shl_apply(unsigned long (*cb)(unsigned long), unsigned long x)
{
    unsigned long r = shl_mix(cb, x + 1);
    shl_sink ^= r;
    return r + 1;
}
