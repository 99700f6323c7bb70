// Command cgo is a profiling target for the Go/C transitions: Go calls C
// (asmcgocall onto the system stack), the C code does work of its own and calls
// back into Go (crosscall2, cgocallback), and the Go callback does work and calls C
// again.  It runs for the number of seconds in argv[1] (default: forever).
package main

/*
#include <stdint.h>

int64_t c_entry(int64_t n);
int64_t c_leaf(int64_t n);
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func goWork(n int64) int64 {
	var acc int64
	for i := int64(0); i < n; i++ {
		acc += (i * 7) % 13
	}
	return acc
}

//export goCallback
func goCallback(n C.int64_t) C.int64_t {
	return C.int64_t(goWork(int64(n))) + C.c_leaf(n/8)
}

//go:noinline
func round(n int64) int64 {
	return int64(C.c_entry(C.int64_t(n))) + goWork(n)
}

func main() {
	seconds := 0
	if len(os.Args) > 1 {
		var err error
		if seconds, err = strconv.Atoi(os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "usage: cgo [SECONDS]")
			os.Exit(2)
		}
	}
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	done := make(chan int64)
	for g := 0; g < 2; g++ {
		go func() {
			var total int64
			for seconds == 0 || time.Now().Before(deadline) {
				total += round(200000)
			}
			done <- total
		}()
	}
	total := <-done + <-done
	fmt.Println("done", total != 0)
}
