package sock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ringOrSkip returns the process's batcher, or skips where io_uring
// cannot be used.
func ringOrSkip(t testing.TB) *batcher {
	t.Helper()
	b := batching()
	if b == nil {
		t.Skip("io_uring is not available here (io_uring_setup failed, or VEER_IO_URING=off)")
	}
	return b
}

func fdOf(t testing.TB, c net.Conn) int32 {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int32
	if err := rc.Control(func(f uintptr) { fd = int32(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestRingCalls checks that the ring's calls tell what sendto and
// recvfrom on a non-blocking socket tell, within one io_uring_enter:
// counts, EAGAIN on an empty socket instead of a wait, 0 at the end of
// the stream, and the errno of a connection reset.
func TestRingCalls(t *testing.T) {
	b := ringOrSkip(t)
	sendC, sendPeer := pair(t) // a send that goes through
	dataC, dataPeer := pair(t) // a receive that finds bytes
	emptyC, _ := pair(t)       // a receive that finds nothing
	eofC, eofPeer := pair(t)   // a receive after the peer closed
	rstC, rstPeer := pair(t)   // a send after the peer reset
	if _, err := dataPeer.Write([]byte("waiting")); err != nil {
		t.Fatal(err)
	}
	eofPeer.Close()
	if err := rstPeer.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	rstPeer.Close()
	time.Sleep(50 * time.Millisecond) // for the FIN and the RST to arrive on loopback

	ops := []*ioOp{
		{code: opSend, fd: fdOf(t, sendC), buf: []byte("hello")},
		{code: opRecv, fd: fdOf(t, dataC), buf: make([]byte, 64)},
		{code: opRecv, fd: fdOf(t, emptyC), buf: make([]byte, 64)},
		{code: opRecv, fd: fdOf(t, eofC), buf: make([]byte, 64)},
		{code: opSend, fd: fdOf(t, rstC), buf: []byte("after the reset")},
	}
	enters := b.ring.run(ops)
	if enters != 1 {
		t.Errorf("%d calls took %d io_uring_enter calls, want 1", len(ops), enters)
	}
	for i, want := range []struct {
		n   int
		err syscall.Errno
	}{{5, 0}, {7, 0}, {0, syscall.EAGAIN}, {0, 0}} {
		if o := ops[i]; o.n != want.n || o.err != want.err || o.pending {
			t.Errorf("call %d: n=%d err=%v pending=%v, want n=%d err=%v", i, o.n, o.err, o.pending, want.n, want.err)
		}
	}
	if got := string(ops[1].buf[:ops[1].n]); got != "waiting" {
		t.Errorf("the receive read %q, want %q", got, "waiting")
	}
	if o := ops[4]; o.err != syscall.ECONNRESET && o.err != syscall.EPIPE {
		t.Errorf("the send after a reset: n=%d err=%v, want ECONNRESET or EPIPE", o.n, o.err)
	}
	if got := readN(t, sendPeer, 5); got != "hello" {
		t.Errorf("the peer got %q, want %q", got, "hello")
	}
}

// TestRingPartialSend checks that a send larger than the socket can take
// returns what it took, and once the socket is full EAGAIN, instead of
// waiting.
func TestRingPartialSend(t *testing.T) {
	b := ringOrSkip(t)
	c, _ := pair(t) // the peer never reads
	if err := c.SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 8<<20)
	fd := fdOf(t, c)
	ops := []*ioOp{{code: opSend, fd: fd, buf: big}, {code: opSend, fd: fd, buf: big}}
	b.ring.run(ops)
	if o := ops[0]; o.err != 0 || o.n <= 0 || o.n >= len(big) {
		t.Errorf("first send: n=%d err=%v, want part of %d bytes", o.n, o.err, len(big))
	}
	// The receiver's buffer may still grow; it stops within a few MiB.
	for i := 0; ; i++ {
		if o := ops[1]; o.err == syscall.EAGAIN {
			break
		} else if o.err != 0 || i == 64 {
			t.Fatalf("send %d: n=%d err=%v, want EAGAIN once the socket is full", i+2, o.n, o.err)
		}
		b.ring.run(ops[1:])
	}
}

// TestRingTakesLargeQueues checks a queue longer than the ring: every
// call is made, in more than one io_uring_enter.
func TestRingTakesLargeQueues(t *testing.T) {
	b := ringOrSkip(t)
	c, peer := pair(t)
	fd := fdOf(t, c)
	n := len(b.ring.sqes)*2 + 3
	ops := make([]*ioOp, n)
	var want bytes.Buffer
	for i := range ops {
		msg := fmt.Appendf(nil, "%d,", i)
		want.Write(msg)
		ops[i] = &ioOp{code: opSend, fd: fd, buf: msg}
	}
	if enters := b.ring.run(ops); enters != 3 {
		t.Errorf("%d calls took %d io_uring_enter calls, want 3", n, enters)
	}
	for i, o := range ops {
		if o.err != 0 || o.n != len(o.buf) {
			t.Fatalf("call %d: n=%d err=%v", i, o.n, o.err)
		}
	}
	if got := readN(t, peer, want.Len()); got != want.String() {
		t.Errorf("the peer got %q..., want the calls in order", got[:min(len(got), 40)])
	}
}

// TestBatchedExchanges runs many connections' exchanges at once on one
// P, both ways (SendThenRead to a backend, a ServerConn's held responses
// to clients), with io_uring, and checks every answer and that the
// calls of a round went to the kernel together.
func TestBatchedExchanges(t *testing.T) {
	b := ringOrSkip(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const conns, rounds = 32, 50

	// The backend answers each request with "re:" and the request.
	ln, err := Listen("127.0.0.1:0", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var served sync.WaitGroup
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			sc := nc.(*ServerConn)
			if sc.b == nil {
				t.Error("a connection accepted on one P has no batcher")
			}
			served.Add(1)
			go func() {
				defer served.Done()
				defer sc.Close()
				p := make([]byte, 256)
				for {
					n, err := sc.Read(p)
					if err != nil {
						return
					}
					sc.Hold()
					if _, err := sc.Write(append([]byte("re:"), p[:n]...)); err != nil {
						return
					}
				}
			}()
		}
	}()

	flushes, calls := b.flushes.Load(), b.calls.Load()
	errs := make(chan error, conns)
	var clients sync.WaitGroup
	for i := range conns {
		clients.Add(1)
		go func() {
			defer clients.Done()
			nc, err := Dial(ln.Addr().String(), time.Second)
			if err != nil {
				errs <- err
				return
			}
			c := nc.(*Conn)
			defer c.Close()
			if c.b == nil {
				errs <- fmt.Errorf("a connection dialled on one P has no batcher")
				return
			}
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			p := make([]byte, 256)
			for r := range rounds {
				req := fmt.Sprintf("conn %d round %d", i, r)
				want := "re:" + req
				n, err := c.SendThenRead([]byte(req), p)
				for err == nil && n < len(want) { // the answer may come in pieces
					var m int
					m, err = c.Read(p[n:])
					n += m
				}
				if err != nil {
					errs <- fmt.Errorf("conn %d round %d: %v", i, r, err)
					return
				}
				if got := string(p[:n]); got != want {
					errs <- fmt.Errorf("conn %d round %d: got %q, want %q", i, r, got, want)
					return
				}
			}
		}()
	}
	clients.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ln.Close()
	served.Wait()

	// Each exchange is four calls here: the client's send and receive,
	// the server's receive and the send of its held response.
	f, n := b.flushes.Load()-flushes, b.calls.Load()-calls
	if n < conns*rounds*4 {
		t.Errorf("the batcher made %d calls, want at least %d", n, conns*rounds*4)
	}
	if f == 0 || float64(n)/float64(f) < 2 {
		t.Errorf("%d calls in %d flushes: the rounds' calls did not go together", n, f)
	}
	t.Logf("%d calls in %d flushes (%.1f a flush)", n, f, float64(n)/float64(f))
}

// TestBatchedLargeExchange sends more than the socket can take through
// the batcher on one P: the ring's send takes part of it, and the rest
// goes out as any write does, every byte in order.
func TestBatchedLargeExchange(t *testing.T) {
	ringOrSkip(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c, peer := pair(t)
	if c.b == nil {
		t.Fatal("a connection dialled on one P has no batcher")
	}
	if err := c.SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 1<<20)
	for i := range out {
		out[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(io.LimitReader(peer, int64(len(out))))
		_, _ = peer.Write([]byte("done"))
		got <- all
	}()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	p := make([]byte, 16)
	n, err := c.SendThenRead(out, p)
	if err != nil {
		t.Fatal(err)
	}
	if string(p[:n]) != "done" {
		t.Errorf("SendThenRead read %q, want %q", p[:n], "done")
	}
	if all := <-got; !bytes.Equal(all, out) {
		t.Errorf("the peer got %d bytes, not the %d sent in order", len(all), len(out))
	}
}

// BenchmarkCalls is the cost of one small send and one small receive on
// loopback TCP sockets, as its own system call and as one of a batch of
// 1, 8 or 64 in one io_uring_enter (ns/op is per call, the send and the
// receive together). On bench's virtual machine this is what the batcher
// is for: see bench/README.md.
func BenchmarkCalls(b *testing.B) {
	const conns = 64
	var cs []*Conn
	var peers []int32
	for range conns {
		c, p := pair(b)
		cs = append(cs, c)
		peers = append(peers, fdOf(b, p))
	}
	fds := make([]int32, conns)
	for i, c := range cs {
		fds[i] = fdOf(b, c)
	}
	msg := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	bufs := make([][]byte, conns)
	for i := range bufs {
		bufs[i] = make([]byte, 256)
	}
	b.Run("syscalls", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			k := i % conns
			if _, e := sendFlags(uintptr(fds[k]), msg, syscall.MSG_NOSIGNAL); e != 0 {
				b.Fatal(e)
			}
			if _, e := recvFlags(uintptr(peers[k]), bufs[k], 0); e != 0 {
				b.Fatal(e)
			}
		}
	})
	for _, batch := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("io_uring batch %d", batch), func(b *testing.B) {
			r := ringOrSkip(b).ring
			sends := make([]*ioOp, batch)
			recvs := make([]*ioOp, batch)
			for i := range batch {
				sends[i] = &ioOp{code: opSend, fd: fds[i], buf: msg}
				recvs[i] = &ioOp{code: opRecv, fd: peers[i], buf: bufs[i]}
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if i%batch == 0 {
					r.run(sends)
					r.run(recvs)
					if o := recvs[batch-1]; o.n != len(msg) {
						b.Fatalf("received %d bytes, err %v", o.n, o.err)
					}
				}
			}
		})
	}
}

// TestBatchedRead checks a client connection's batched plain Read against
// what the *net.TCPConn's returns: the bytes, a timeout as a net.Error,
// the end of the stream as io.EOF, and net.ErrClosed after Close. A
// backend's connection reads as the *net.TCPConn does.
func TestBatchedRead(t *testing.T) {
	ringOrSkip(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if d, _ := pair(t); d.b == nil || d.readBatch {
		t.Errorf("a connection dialled on one P: batcher %v, readBatch %v; want one, and false", d.b, d.readBatch)
	}
	c, peer := accepted(t, time.Minute)
	if !c.readBatch {
		t.Fatal("a connection accepted on one P does not batch its reads")
	}
	p := make([]byte, 16)
	if _, err := peer.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(p); err != nil || string(p[:n]) != "abc" {
		t.Fatalf("Read: %q, %v; want %q", p[:n], err, "abc")
	}

	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := c.Read(p)
	var ne net.Error
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %d, %v; want 0 and a timeout", n, err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" {
		t.Errorf("Read past the deadline: %#v, want a *net.OpError of a read", err)
	}

	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	peer.Close()
	if n, err := c.Read(p); n != 0 || err != io.EOF {
		t.Errorf("Read after the peer closed: %d, %v; want 0, io.EOF", n, err)
	}

	c.Close()
	if _, err := c.Read(p); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
}
