package sock

import (
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// waiting returns how many bytes c's socket has received and not yet
// read, without reading them or waiting.
func waiting(c net.Conn) (int, error) {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	var perr error
	buf := make([]byte, 64)
	if err := rc.Control(func(fd uintptr) {
		n, _, perr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return 0, err
	}
	if perr == syscall.EAGAIN {
		return 0, nil
	}
	return n, perr
}

// TestWritesWaitForTheRound checks that, on one P, SendThenRead and a
// ServerConn's Read of a held response let a goroutine that is already
// runnable run before they write (Conn.yield, or the batcher's flush when
// io_uring is there), and that they write at once when the connection
// does not batch, or when Go has more Ps.
//
// The other goroutine looks at the peer's socket when it runs: on
// loopback the bytes are in it as soon as the write returns. With one P
// nothing else runs in between, so what it sees is the order itself.
func TestWritesWaitForTheRound(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	// exchange makes send's write and its answer's wait while another
	// goroutine, made runnable just before, looks at peer, and returns
	// how many bytes it found there.
	exchange := func(t *testing.T, send func() error, peer net.Conn, request int) int {
		t.Helper()
		ready := make(chan struct{})
		seen := make(chan int, 1)
		failed := make(chan error, 1)
		go func() {
			<-ready
			n, err := waiting(peer)
			seen <- n
			if err == nil {
				// Take the request and answer it, so that send returns.
				_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err = io.ReadFull(peer, make([]byte, request)); err == nil {
					_, err = peer.Write([]byte("answer"))
				}
			}
			failed <- err
		}()
		close(ready)
		if err := send(); err != nil {
			t.Fatal(err)
		}
		if err := <-failed; err != nil {
			t.Fatalf("the peer: %v", err)
		}
		return <-seen
	}

	// How a connection batches: by yielding, through the batcher, or not.
	set := func(t *testing.T, c *Conn, mode string) {
		t.Helper()
		if !c.batch {
			t.Fatal("a connection opened with GOMAXPROCS=1 does not batch")
		}
		if c.b == nil && batching() != nil {
			t.Fatal("a connection opened with GOMAXPROCS=1 has no batcher, though io_uring works")
		}
		switch mode {
		case "yielding":
			c.b = nil
		case "io_uring":
			if c.b == nil {
				t.Skip("io_uring is not available here")
			}
		case "not batching":
			c.batch, c.b = false, nil
		}
	}
	// Go's scheduler takes the global run queue first once every 61
	// rounds, so a goroutine that yielded can now and then come back
	// before the one made runnable: a batching connection must be seen
	// to wait in one of a few tries (one that never waits finds the bytes
	// every time), and one that does not batch must never wait.
	const tries = 5
	for _, mode := range []string{"yielding", "io_uring", "not batching"} {
		batch := mode != "not batching"
		// try runs one exchange per call until one finds what batch
		// wants, at most tries times, and returns what the last one found.
		try := func(t *testing.T, one func(t *testing.T) int, want int) int {
			t.Helper()
			var n int
			for range map[bool]int{true: tries, false: 1}[batch] {
				if n = one(t); n == want {
					break
				}
			}
			return n
		}
		t.Run(mode, func(t *testing.T) {
			t.Run("SendThenRead", func(t *testing.T) {
				want := map[bool]int{true: 0, false: 5}[batch]
				n := try(t, func(t *testing.T) int {
					c, peer := pair(t)
					set(t, c, mode)
					p := make([]byte, 64)
					return exchange(t, func() error {
						n, err := c.SendThenRead([]byte("hello"), p)
						if err == nil && string(p[:n]) != "answer" {
							t.Errorf("SendThenRead read %q", p[:n])
						}
						return err
					}, peer, 5)
				}, want)
				if n != want {
					t.Errorf("the other goroutine found %d bytes at the peer, want %d", n, want)
				}
			})
			t.Run("ServerConn.Read", func(t *testing.T) {
				want := map[bool]int{true: 0, false: len("response")}[batch]
				n := try(t, func(t *testing.T) int {
					sc, client := accepted(t, time.Minute)
					set(t, &sc.Conn, mode)
					sc.Hold()
					if _, err := sc.Write([]byte("response")); err != nil {
						t.Fatal(err)
					}
					p := make([]byte, 64)
					return exchange(t, func() error {
						n, err := sc.Read(p)
						if err == nil && string(p[:n]) != "answer" {
							t.Errorf("Read read %q", p[:n])
						}
						return err
					}, client, len("response"))
				}, want)
				if n != want {
					t.Errorf("the other goroutine found %d bytes at the client, want %d", n, want)
				}
			})
		})
	}

	t.Run("more than one P", func(t *testing.T) {
		runtime.GOMAXPROCS(2)
		defer runtime.GOMAXPROCS(1)
		c, _ := pair(t)
		sc, _ := accepted(t, time.Minute)
		if c.batch || sc.batch || c.b != nil || sc.b != nil {
			t.Errorf("with GOMAXPROCS=2, batch is %v for Dial's connection and %v for Listen's, and they have batchers %v and %v; want false and nil", c.batch, sc.batch, c.b, sc.b)
		}
	})
}

// BenchmarkYield is the cost of a batching connection's yield when no
// other goroutine is runnable (one P): a trip through the scheduler and
// straight back, the price the batching pays on an idle proxy.
func BenchmarkYield(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c := &Conn{batch: true}
	b.ReportAllocs()
	for b.Loop() {
		c.yield()
	}
}
