// Command goroutines is a profiling target: several goroutines doing CPU work
// through recursion, closures, interface calls, maps, sort.Slice, a deep call
// chain, allocation (so the collector runs on the system stack) and stack growth
// (so morestack copies stacks).  It runs for the number of seconds in argv[1]
// (default: forever).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"
)

type shape interface {
	area() float64
}

type rect struct{ w, h float64 }
type circle struct{ r float64 }

func (r rect) area() float64   { return r.w * r.h }
func (c circle) area() float64 { return 3.14159 * c.r * c.r }

//go:noinline
func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

//go:noinline
func shapes(n int) float64 {
	list := make([]shape, 0, n)
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			list = append(list, rect{float64(i), 2})
		} else {
			list = append(list, circle{float64(i)})
		}
	}
	total := 0.0
	for _, s := range list {
		total += s.area()
	}
	return total
}

//go:noinline
func mapWork(n int) int {
	m := make(map[string]int)
	for i := 0; i < n; i++ {
		m[strconv.Itoa(i%997)] += i
	}
	sum := 0
	for _, v := range m {
		sum += v
	}
	return sum
}

//go:noinline
func sortWork(n int, seed int) int {
	xs := make([]int, n)
	for i := range xs {
		seed = seed*1103515245 + 12345
		xs[i] = seed % 100000
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
	return xs[n/2]
}

// deep recurses through a chain of frames with large locals, so goroutine stacks
// grow (morestack + copystack) each time a fresh goroutine runs it.
//
//go:noinline
func deep(depth int) int {
	var pad [64]int
	pad[depth%64] = depth
	if depth == 0 {
		return fib(15) + pad[0]
	}
	return deep(depth-1) + pad[depth%64]
}

//go:noinline
func level3(n int) int { return mapWork(n) + sortWork(n, n) }

//go:noinline
func level2(n int) int { return level3(n) + int(shapes(n)) }

//go:noinline
func level1(n int) int { return level2(n) + fib(20) }

func allocate(n int) int {
	keep := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		keep = append(keep, make([]byte, 1024+i%4096))
	}
	if n%7 == 0 {
		runtime.GC()
	}
	return len(keep)
}

func worker(id int, stop <-chan struct{}, out chan<- int) {
	step := func(i int) int {
		switch (i + id) % 5 {
		case 0:
			return level1(500 + i%300)
		case 1:
			done := make(chan int)
			go func() { done <- deep(200 + i%100) }()
			return <-done
		case 2:
			return allocate(200 + i%50)
		case 3:
			return fib(22)
		default:
			return int(shapes(2000)) + mapWork(1000)
		}
	}
	total := 0
	for i := 0; ; i++ {
		select {
		case <-stop:
			out <- total
			return
		default:
		}
		total += step(i)
	}
}

func main() {
	seconds := 0
	if len(os.Args) > 1 {
		var err error
		if seconds, err = strconv.Atoi(os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "usage: goroutines [SECONDS]")
			os.Exit(2)
		}
	}
	stop := make(chan struct{})
	out := make(chan int, 4)
	var wg sync.WaitGroup
	for id := 0; id < 4; id++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			worker(id, stop, out)
		}(id)
	}
	if seconds > 0 {
		time.Sleep(time.Duration(seconds) * time.Second)
		close(stop)
		wg.Wait()
		close(out)
		sum := 0
		for v := range out {
			sum += v
		}
		fmt.Println("done", sum != 0)
		return
	}
	select {}
}
