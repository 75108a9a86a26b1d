package sock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair returns a dialed *Conn and the accepted end of the same loopback
// connection.
func pair(t testing.TB) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := Dial(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := nc.(*Conn)
	if !ok {
		t.Fatalf("Dial returned %T, want *Conn", nc)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func TestSendThenRead(t *testing.T) {
	t.Run("answer after the request", func(t *testing.T) {
		c, peer := pair(t)
		got := make(chan string, 1)
		go func() {
			b := make([]byte, 5)
			_, _ = io.ReadFull(peer, b)
			got <- string(b)
			time.Sleep(20 * time.Millisecond) // the client is waiting by now
			_, _ = peer.Write([]byte("answer"))
		}()
		p := make([]byte, 64)
		n, err := c.SendThenRead([]byte("hello"), p)
		if err != nil || string(p[:n]) != "answer" {
			t.Fatalf("SendThenRead = %q, %v; want \"answer\"", p[:n], err)
		}
		if s := <-got; s != "hello" {
			t.Errorf("peer read %q, want hello", s)
		}
	})

	t.Run("answer already waiting", func(t *testing.T) {
		// Bytes that arrived before the call are read too: a readiness
		// event from before the wait was armed must not be needed.
		c, peer := pair(t)
		if _, err := peer.Write([]byte("early")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		go func() { _, _ = io.ReadFull(peer, make([]byte, 3)); _, _ = peer.Write([]byte("late")) }()
		p := make([]byte, 64)
		var all []byte
		for len(all) < len("earlylate") {
			var n int
			var err error
			if all == nil {
				n, err = c.SendThenRead([]byte("req"), p)
			} else {
				n, err = c.Read(p)
			}
			if err != nil {
				t.Fatalf("after %q: %v", all, err)
			}
			all = append(all, p[:n]...)
		}
		if string(all) != "earlylate" {
			t.Errorf("read %q, want earlylate", all)
		}
	})

	t.Run("peer closed", func(t *testing.T) {
		c, peer := pair(t)
		go func() { _, _ = io.ReadFull(peer, make([]byte, 3)); peer.Close() }()
		n, err := c.SendThenRead([]byte("req"), make([]byte, 8))
		if n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("SendThenRead on a closed peer = %d, %v; want io.EOF", n, err)
		}
		if !isConnGone(err) {
			t.Errorf("isConnGone(%v) = false", err)
		}
	})

	t.Run("peer reset before the request", func(t *testing.T) {
		c, peer := pair(t)
		_ = peer.(*net.TCPConn).SetLinger(0)
		peer.Close() // RST
		time.Sleep(20 * time.Millisecond)
		_, err := c.SendThenRead([]byte("req"), make([]byte, 8))
		if err == nil || !isConnGone(err) {
			t.Fatalf("SendThenRead after a reset = %v; want a gone connection (ECONNRESET, EPIPE or EOF)", err)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		c, peer := pair(t)
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.SendThenRead([]byte("req"), make([]byte, 8))
		if !isTimeout(err) {
			t.Fatalf("SendThenRead with no answer = %v; want a timeout", err)
		}
	})

	t.Run("deadline passed before the call", func(t *testing.T) {
		c, peer := pair(t)
		got := make(chan int, 1)
		go func() { n, _ := io.Copy(io.Discard, peer); got <- int(n) }()
		_ = c.SetReadDeadline(time.Now().Add(-time.Second))
		_, err := c.SendThenRead([]byte("req"), make([]byte, 8))
		if !isTimeout(err) {
			t.Fatalf("SendThenRead past its deadline = %v; want a timeout", err)
		}
		c.Close()
		if n := <-got; n != 0 {
			t.Errorf("peer got %d bytes of a request whose deadline had passed, want 0", n)
		}
	})

	t.Run("request larger than the send buffer", func(t *testing.T) {
		c, peer := pair(t)
		if err := c.SetWriteBuffer(4096); err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		done := make(chan error, 1)
		go func() {
			time.Sleep(50 * time.Millisecond) // let the send buffer fill
			b := make([]byte, len(big))
			if _, err := io.ReadFull(peer, b); err != nil {
				done <- err
				return
			}
			if !bytes.Equal(b, big) {
				done <- errors.New("peer read other bytes than were sent")
				return
			}
			_, err := peer.Write([]byte("got it"))
			done <- err
		}()
		p := make([]byte, 64)
		n, err := c.SendThenRead(big, p)
		if err != nil || string(p[:n]) != "got it" {
			t.Fatalf("SendThenRead of 1 MiB = %q, %v", p[:n], err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("closed locally", func(t *testing.T) {
		c, _ := pair(t)
		c.Close()
		_, err := c.SendThenRead([]byte("req"), make([]byte, 8))
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("SendThenRead on a closed Conn = %v; want net.ErrClosed", err)
		}
	})
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Error("Wrap changed a net.Pipe connection")
	}
}

// TestSendThenReadErrors: the errors say which system call failed, and
// carry the errno for the callers' checks.
func TestSendThenReadErrors(t *testing.T) {
	c, peer := pair(t)
	_ = peer.(*net.TCPConn).SetLinger(0)
	go func() { _, _ = io.ReadFull(peer, make([]byte, 3)); peer.Close() }()
	_, err := c.SendThenRead([]byte("req"), make([]byte, 8))
	var se *os.SyscallError
	if err == nil {
		t.Fatal("SendThenRead after the peer reset: no error")
	}
	if errors.As(err, &se) && se.Syscall != "recvfrom" {
		t.Errorf("error %v names %q, want recvfrom", err, se.Syscall)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Errorf("error %v is neither ECONNRESET nor EOF", err)
	}
}

func isConnGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func TestKeepDeadline(t *testing.T) {
	t.Run("timers change only out of range", func(t *testing.T) {
		c, _ := pair(t)
		at := time.Now().Add(time.Minute)
		slack := time.Second
		if err := c.KeepDeadline(at, slack); err != nil {
			t.Fatal(err)
		}
		if got, want := c.dl.Load(), at.Add(slack).UnixNano(); got != want {
			t.Fatalf("deadline in force %d, want t+slack %d", got, want)
		}
		// A little later, still covered: nothing changes.
		if err := c.KeepDeadline(at.Add(slack/2), slack); err != nil {
			t.Fatal(err)
		}
		if got, want := c.dl.Load(), at.Add(slack).UnixNano(); got != want {
			t.Fatalf("deadline moved to %d within the slack, want it left at %d", got, want)
		}
		// Past the slack: moved.
		later := at.Add(2 * slack)
		if err := c.KeepDeadline(later, slack); err != nil {
			t.Fatal(err)
		}
		if got, want := c.dl.Load(), later.Add(slack).UnixNano(); got != want {
			t.Fatalf("deadline in force %d, want %d", got, want)
		}
		// Earlier than the one in force (a shorter timeout): moved back.
		sooner := at.Add(slack)
		if err := c.KeepDeadline(sooner, slack); err != nil {
			t.Fatal(err)
		}
		if got, want := c.dl.Load(), sooner.Add(slack).UnixNano(); got != want {
			t.Fatalf("deadline in force %d, want %d", got, want)
		}
	})

	t.Run("in force", func(t *testing.T) {
		c, _ := pair(t)
		if err := c.KeepDeadline(time.Now().Add(50*time.Millisecond), 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		_, err := c.Read(make([]byte, 8)) // the peer sends nothing
		if !isTimeout(err) {
			t.Fatalf("Read = %v, want the deadline to end it", err)
		}
	})

	// Each setter leaves the timers where it put them, so KeepDeadline
	// must set them again after it even when the time asked is covered.
	setters := map[string]func(*Conn, time.Time) error{
		"SetDeadline":      (*Conn).SetDeadline,
		"SetReadDeadline":  (*Conn).SetReadDeadline,
		"SetWriteDeadline": (*Conn).SetWriteDeadline,
	}
	for name, set := range setters {
		t.Run("again after "+name, func(t *testing.T) {
			c, peer := pair(t)
			at := time.Now().Add(time.Minute)
			if err := c.KeepDeadline(at, time.Second); err != nil {
				t.Fatal(err)
			}
			if err := set(c, time.Unix(1, 0)); err != nil {
				t.Fatal(err)
			}
			if err := c.KeepDeadline(at, time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := peer.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("w")); err != nil {
				t.Fatalf("Write after KeepDeadline: %v (a deadline in the past left in force)", err)
			}
			p := make([]byte, 2)
			if _, err := io.ReadFull(c, p); err != nil || string(p) != "ok" {
				t.Fatalf("Read after KeepDeadline = %q, %v (a deadline in the past left in force)", p, err)
			}
		})
	}

	t.Run("zero is none", func(t *testing.T) {
		c, peer := pair(t)
		if err := c.SetDeadline(time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
		if err := c.KeepDeadline(time.Time{}, time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 2)
		if _, err := io.ReadFull(c, p); err != nil {
			t.Fatalf("Read with no deadline: %v", err)
		}
	})
}
