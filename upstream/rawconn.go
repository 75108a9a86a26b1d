package upstream

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Dial opens a TCP connection to addr within timeout, as a Conn that can
// send a request and wait for its answer without the read that finds
// nothing yet (see Conn.SendThenRead). It is the Dial of every backend's
// HostClient.
func Dial(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Wrap returns c as a *Conn when it is a TCP connection, and c itself
// otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	x := &Conn{TCPConn: tc, rc: rc}
	x.step = x.stepFD // bound once: a method value made per call would allocate
	return x
}

// Conn is a backend TCP connection. Everything but SendThenRead is the
// *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	rc   syscall.RawConn
	step func(fd uintptr) bool

	// The state of one SendThenRead, for step.
	out    []byte // still to write
	in     []byte // where the answer goes
	n      int
	err    error
	waited bool
}

// SendThenRead writes out and then reads the answer into p, as a Write
// followed by a Read would, in one wait: the wait for the answer is armed
// before out is written, so no answer can slip past it, and the read that
// Go's Read makes first, which right after a request finds nothing and
// fails with EAGAIN, is not made. On a proxy that is one system call in
// four of each exchange with a backend (nginx and HAProxy read only when
// epoll says there is something to read, too).
//
// The connection's read deadline bounds the whole call. When the socket's
// send buffer cannot take out at once, the rest is written with Write and
// the answer read with Read, as usual.
func (c *Conn) SendThenRead(out, p []byte) (int, error) {
	c.out, c.in, c.n, c.err, c.waited = out, p, 0, nil, false
	err := c.rc.Read(c.step)
	rest, n, rerr := c.out, c.n, c.err
	c.out, c.in, c.err = nil, nil, nil
	switch {
	case rerr != nil:
		return 0, rerr
	case len(rest) == len(out) && err != nil:
		return 0, err // closed, or the deadline passed, before anything was sent
	case len(rest) > 0:
		// The send buffer is full: the rest waits for room as any write does.
		if _, err := c.TCPConn.Write(rest); err != nil {
			return 0, err
		}
		return c.TCPConn.Read(p)
	case err != nil:
		return 0, err
	}
	return n, nil
}

// stepFD is SendThenRead's callback: it runs when the wait starts and
// again each time epoll reports the socket readable, and returns true
// when it is done.
func (c *Conn) stepFD(fd uintptr) bool {
	for len(c.out) > 0 {
		n, err := syscall.Write(int(fd), c.out)
		if n > 0 {
			c.out = c.out[n:]
		}
		switch err {
		case nil:
		case syscall.EINTR:
		case syscall.EAGAIN:
			return true // SendThenRead writes the rest
		default:
			c.err = os.NewSyscallError("write", err)
			return true
		}
	}
	if !c.waited {
		c.waited = true
		return false // wait for the answer
	}
	for {
		n, err := syscall.Read(int(fd), c.in)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false // woken without data: wait again
		case err != nil:
			c.err = os.NewSyscallError("read", err)
		case n == 0:
			c.err = io.EOF
		default:
			c.n = n
		}
		return true
	}
}
