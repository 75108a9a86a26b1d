package sock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// accepted returns a *ServerConn from Listen and the client's end, with
// nothing left to read on either.
func accepted(t *testing.T, patience time.Duration) (*ServerConn, net.Conn) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", patience)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// The listener hands over connections that have sent something.
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := nc.(*ServerConn)
	if !ok {
		t.Fatalf("Accept returned %T, want *ServerConn", nc)
	}
	t.Cleanup(func() { sc.Close(); client.Close() })
	if got := readN(t, sc, 1); got != "x" {
		t.Fatalf("server read %q, want the client's first byte", got)
	}
	return sc, client
}

// TestListenDefersAccept checks that the listener hands over a connection
// with its first bytes already there to read, as TCP_DEFER_ACCEPT does.
func TestListenDefersAccept(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.(*listener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if v <= 0 {
		t.Fatalf("TCP_DEFER_ACCEPT = %d on the listener, want it on", v)
	}

	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Look without waiting: the request is in the socket when Accept
	// returns it.
	src, err := nc.(*ServerConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := src.Read(func(fd uintptr) bool {
		var b [64]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if n != len("GET / HTTP/1.1\r\n\r\n") {
		t.Fatalf("%d bytes readable when Accept returned, want the whole request", n)
	}
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("client read: %v", err)
	}
	return string(b)
}

func TestServerConnHold(t *testing.T) {
	t.Run("held until the next read, which sends it", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		sc.Hold()
		if n, err := sc.Write([]byte("response 1")); n != 10 || err != nil {
			t.Fatalf("held Write = %d, %v", n, err)
		}
		// Nothing is on the wire yet.
		_ = client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := client.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("client read %d bytes (%v) before the server's next Read; want none", n, err)
		}
		got := make(chan string, 1)
		go func() {
			p := make([]byte, 64)
			n, err := sc.Read(p)
			got <- fmt.Sprintf("%s %v", p[:n], err)
		}()
		if s := readN(t, client, 10); s != "response 1" {
			t.Fatalf("client got %q", s)
		}
		if _, err := client.Write([]byte("request 2")); err != nil {
			t.Fatal(err)
		}
		if s := <-got; s != "request 2 <nil>" {
			t.Errorf("server Read = %q, want the next request", s)
		}
	})

	t.Run("a response larger than the hold goes out at once, whole", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		first := bytes.Repeat([]byte("a"), 4096)
		rest := bytes.Repeat([]byte("b"), holdMax)
		sc.Hold()
		if n, err := sc.Write(first); n != len(first) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if n, err := sc.Write(rest); n != len(rest) || err != nil {
			t.Fatalf("Write over the hold = %d, %v", n, err)
		}
		if s := readN(t, client, len(first)+len(rest)); s != string(first)+string(rest) {
			t.Fatal("client got other bytes than were written")
		}
		// Nothing is held any more: the next write goes out at once.
		if _, err := sc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if s := readN(t, client, 1); s != "x" {
			t.Fatalf("client got %q", s)
		}
	})

	t.Run("close sends what is held", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		sc.Hold()
		_, _ = sc.Write([]byte("last words"))
		done := make(chan struct{})
		go func() { defer close(done); sc.Close() }() // another goroutine, as fasthttp's Shutdown
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(client)
		<-done
		if string(b) != "last words" || err != nil {
			t.Fatalf("client read %q, %v; want the held response, then EOF", b, err)
		}
	})

	t.Run("a request that came early is read after the patient wait", func(t *testing.T) {
		// A pipelining client: its next request is on the wire before the
		// response goes out, so no new bytes end SendThenRead's wait.
		sc, client := accepted(t, 20*time.Millisecond)
		if _, err := client.Write([]byte("early")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // it has arrived
		sc.Hold()
		_, _ = sc.Write([]byte("response"))
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute)) // the idle timeout, as fasthttp sets it
		p := make([]byte, 64)
		n, err := sc.Read(p)
		if err != nil || string(p[:n]) != "early" {
			t.Fatalf("server Read = %q, %v; want the early request", p[:n], err)
		}
		if s := readN(t, client, 8); s != "response" {
			t.Fatalf("client got %q", s)
		}
	})

	t.Run("the server's deadline still ends the wait", func(t *testing.T) {
		sc, client := accepted(t, 10*time.Millisecond)
		sc.Hold()
		_, _ = sc.Write([]byte("response"))
		_ = sc.SetReadDeadline(time.Now().Add(60 * time.Millisecond))
		_, err := sc.Read(make([]byte, 8))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("server Read with an idle client = %v; want the deadline", err)
		}
		if s := readN(t, client, 8); s != "response" {
			t.Fatalf("client got %q", s)
		}
	})

	t.Run("a request after the patient wait", func(t *testing.T) {
		sc, client := accepted(t, 10*time.Millisecond)
		sc.Hold()
		_, _ = sc.Write([]byte("response"))
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute))
		got := make(chan string, 1)
		go func() {
			p := make([]byte, 64)
			n, err := sc.Read(p)
			got <- fmt.Sprintf("%s %v", p[:n], err)
		}()
		readN(t, client, 8)
		time.Sleep(50 * time.Millisecond) // past the patience
		_, _ = client.Write([]byte("late"))
		if s := <-got; s != "late <nil>" {
			t.Errorf("server Read = %q, want the late request", s)
		}
	})

	t.Run("client gone", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		sc.Hold()
		_, _ = sc.Write([]byte("response"))
		go func() { readN(t, client, 8); client.Close() }()
		_ = sc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := sc.Read(make([]byte, 8))
		if !errors.Is(err, io.EOF) {
			t.Fatalf("server Read after the client closed = %v, want EOF", err)
		}
	})
}

// within runs f and fails when it has not returned within 10 s: a read or
// write a deadline should end, which would otherwise wait on.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still waiting after 10 s", what)
	}
}

// smallBuffers makes the server's sends and the client's receives
// buffer little, so that a few tens of KiB fill them.
func smallBuffers(t *testing.T, sc *ServerConn, client net.Conn) {
	t.Helper()
	if err := sc.SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := client.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
}

// TestServerConnDeadlines: a deadline the server asks for when no read
// or write could wait on it reaches the poller later, but always before
// a read or write that can wait.
func TestServerConnDeadlines(t *testing.T) {
	t.Run("a read deadline set after the patient wait bounds the next read", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		sc.Hold()
		_, _ = sc.Write([]byte("response"))
		_ = sc.SetReadDeadline(time.Now().Add(10 * time.Minute)) // the idle timeout
		go func() {
			readN(t, client, 8)
			_, _ = client.Write([]byte("req"))
		}()
		p := make([]byte, 64)
		if n, err := sc.Read(p); err != nil || string(p[:n]) != "req" {
			t.Fatalf("server Read = %q, %v", p[:n], err)
		}
		// The request's read timeout, as fasthttp sets it after the first
		// byte; the patient wait's minute is what the poller has.
		_ = sc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var err error
		within(t, "Read past its deadline", func() { _, err = sc.Read(p) })
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("server Read = %v, want the deadline", err)
		}
	})

	t.Run("the patient wait's deadline is kept only while in force", func(t *testing.T) {
		sc, client := accepted(t, 200*time.Millisecond)
		p := make([]byte, 64)
		read := func(want string) {
			t.Helper()
			var n int
			var err error
			within(t, "Read", func() { n, err = sc.Read(p) })
			if err != nil || string(p[:n]) != want {
				t.Fatalf("server Read = %q, %v; want %q", p[:n], err, want)
			}
		}
		sc.Hold()
		_, _ = sc.Write([]byte("r1"))
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute)) // the patient wait's, kept
		go func() {
			readN(t, client, 2)
			_, _ = client.Write([]byte("q1"))
		}()
		read("q1")
		// A request in two reads: the second puts the read deadline in
		// force in place of the patient one.
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute))
		_, _ = client.Write([]byte("more"))
		read("more")
		// The next request comes early, before the response: only a
		// patient deadline in force ends the wait for it.
		_, _ = client.Write([]byte("early"))
		sc.Hold()
		_, _ = sc.Write([]byte("r2"))
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute))
		read("early")
	})

	t.Run("after SetDeadline, another goroutine's deadline ends a read", func(t *testing.T) {
		// As a hijacked connection: fasthttp sets both deadlines before
		// it hands the connection over, then one pump reads while the
		// tunnel's close sets a past deadline from another goroutine.
		sc, client := accepted(t, time.Minute)
		sc.Hold()
		_, _ = sc.Write([]byte("101"))
		_ = sc.SetReadDeadline(time.Now().Add(10 * time.Minute))
		go func() {
			readN(t, client, 3)
			_, _ = client.Write([]byte("upgrade"))
		}()
		p := make([]byte, 64)
		if n, err := sc.Read(p); err != nil || string(p[:n]) != "upgrade" {
			t.Fatalf("server Read = %q, %v", p[:n], err)
		}
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute)) // the request's read timeout
		_ = sc.SetDeadline(time.Time{})                     // before the hijack
		pumping := make(chan struct{})
		read := make(chan error, 1)
		go func() {
			_ = sc.SetReadDeadline(time.Now().Add(time.Minute)) // the pump's idle timeout
			close(pumping)
			_, err := sc.Read(p)
			read <- err
		}()
		<-pumping
		go func() { _ = sc.SetDeadline(time.Unix(1, 0)) }() // the tunnel's close
		var err error
		within(t, "the pump's Read after the close", func() { err = <-read })
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("pump's Read = %v, want the close's deadline", err)
		}
	})

	t.Run("a write deadline set while held bounds a write that waits", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		t.Cleanup(func() { client.Close() }) // first: it ends a write that waits
		smallBuffers(t, sc, client)
		sc.Hold()
		_ = sc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		var err error
		within(t, "Write to a client that does not read", func() {
			_, err = sc.Write(make([]byte, 8<<20)) // more than the hold: written now
		})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write = %v, want the deadline", err)
		}
	})

	t.Run("a write deadline set while held replaces a past one", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		_ = sc.SetWriteDeadline(time.Now().Add(-time.Second)) // in force at once
		sc.Hold()
		_ = sc.SetWriteDeadline(time.Now().Add(time.Minute))
		big := bytes.Repeat([]byte("z"), holdMax+1)
		if n, err := sc.Write(big); n != len(big) || err != nil {
			t.Fatalf("Write = %d, %v; want it under the new deadline", n, err)
		}
		if s := readN(t, client, len(big)); s != string(big) {
			t.Fatal("client got other bytes than were written")
		}
	})

	t.Run("the rest of a held response that fills the send buffer", func(t *testing.T) {
		sc, client := accepted(t, time.Minute)
		t.Cleanup(func() { client.Close() }) // first: it ends a write that waits
		smallBuffers(t, sc, client)
		_ = sc.SetWriteDeadline(time.Now().Add(-time.Second))
		sc.Hold()
		_ = sc.SetWriteDeadline(time.Now().Add(time.Minute))
		// Fill the send buffer, the client not reading yet.
		rc, err := sc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		filled := 0
		fill := func(fd uintptr) {
			for {
				n, errno := sendFlags(fd, make([]byte, 4096), syscall.MSG_NOSIGNAL)
				if errno != 0 {
					return // EAGAIN: full for now
				}
				filled += n
			}
		}
		// Until it stays full: acknowledged bytes make room for a while.
		for before := -1; before != filled; time.Sleep(10 * time.Millisecond) {
			before = filled
			if err := rc.Control(fill); err != nil {
				t.Fatal(err)
			}
		}
		held := bytes.Repeat([]byte("h"), holdMax)
		_, _ = sc.Write(held)
		_ = sc.SetReadDeadline(time.Now().Add(time.Minute))
		go func() {
			// Read once the server's send has found the buffer full (if
			// the client read sooner, the send would not wait).
			time.Sleep(100 * time.Millisecond)
			readN(t, client, filled)
			if s := readN(t, client, len(held)); s != string(held) {
				t.Errorf("client got other bytes than were held")
			}
			_, _ = client.Write([]byte("next"))
		}()
		p := make([]byte, 64)
		var n int
		within(t, "Read after a held response", func() { n, err = sc.Read(p) })
		if err != nil || string(p[:n]) != "next" {
			t.Fatalf("server Read = %q, %v; want the held response sent under the new deadline, then the next request", p[:n], err)
		}
	})
}

// TestServerConnUnderFasthttp: fasthttp's server on Listen's connections,
// with every response held, as proxy.Handler holds them: keep-alive
// requests in turn, pipelined ones, a streamed body, and Shutdown.
func TestServerConnUnderFasthttp(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/slow" {
				time.Sleep(30 * time.Millisecond) // the pipelined request arrives meanwhile
			}
			ctx.SetBodyString("answer to " + string(ctx.Path()))
			if sc, ok := ctx.Conn().(*ServerConn); ok {
				sc.Hold()
			}
		},
		IdleTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	defer wg.Wait()
	defer srv.Shutdown() //nolint:errcheck

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	read := func(want string) {
		t.Helper()
		var resp fasthttp.Response
		if err := resp.Read(br); err != nil {
			t.Fatalf("reading the answer %q: %v", want, err)
		}
		if string(resp.Body()) != want {
			t.Fatalf("got %q, want %q", resp.Body(), want)
		}
	}
	req := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }

	for i := range 20 { // keep-alive, one after another
		path := fmt.Sprintf("/%d", i)
		if _, err := io.WriteString(c, req(path)); err != nil {
			t.Fatal(err)
		}
		read("answer to " + path)
	}
	// Pipelined together: both arrive in one read.
	_, _ = io.WriteString(c, req("/a")+req("/b"))
	read("answer to /a")
	read("answer to /b")
	// Pipelined while the first is being answered: the second is on the
	// wire before the first's response goes out.
	_, _ = io.WriteString(c, req("/slow"))
	time.Sleep(10 * time.Millisecond)
	_, _ = io.WriteString(c, req("/c"))
	read("answer to /slow")
	read("answer to /c")
	// Connection: close: the held answer goes out before the close.
	_, _ = io.WriteString(c, strings.Replace(req("/bye"), "Host: x", "Host: x\r\nConnection: close", 1))
	read("answer to /bye")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close: %v, want EOF", err)
	}
}
