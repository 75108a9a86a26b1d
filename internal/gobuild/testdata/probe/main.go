// Command probe prints the order in which Go's scheduler runs goroutines
// whose sockets became ready in a known order: n readers each wait on a
// loopback TCP connection; with one P, the main goroutine writes a byte to
// each connection in turn, 0 first, and then waits, so the scheduler finds
// all n ready in one netpoll and runs them in the order it chose. Each
// reader records its number when it runs. gobuild's test builds this with
// and without the overlay.
package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

const n = 32

func main() {
	runtime.GOMAXPROCS(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	var readers, writers [n]net.Conn
	for i := range n {
		if writers[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
			fail(err)
		}
		if readers[i], err = ln.Accept(); err != nil {
			fail(err)
		}
	}
	var (
		mu      sync.Mutex
		order   []int
		started atomic.Int32
		wg      sync.WaitGroup
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Add(1)
			var b [1]byte
			if _, err := readers[i].Read(b[:]); err != nil {
				fail(err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}()
	}
	// With one P, main runs again only once every reader has started and
	// parked in Read (nothing was written yet).
	for started.Load() < n {
		runtime.Gosched()
	}
	runtime.Gosched()
	for i := range n {
		if _, err := writers[i].Write([]byte{1}); err != nil {
			fail(err)
		}
	}
	wg.Wait()
	fmt.Println(order)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "probe:", err)
	os.Exit(1)
}
