// The C half of the cgo target: work of its own, and a call back into Go.
#include <stdint.h>
#include "_cgo_export.h"

__attribute__((noinline)) static int64_t c_spin(int64_t n) {
	volatile int64_t acc = 0;
	for (int64_t i = 0; i < n; i++)
		acc += i * i ^ (acc >> 3);
	return acc;
}

__attribute__((noinline)) static int64_t c_middle(int64_t n) {
	return c_spin(n) + goCallback(n / 2);
}

__attribute__((noinline)) int64_t c_entry(int64_t n) {
	return c_middle(n) + c_spin(n / 4);
}

__attribute__((noinline)) int64_t c_leaf(int64_t n) {
	return c_spin(n);
}
