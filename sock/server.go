package sock

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Listen opens a TCP listener on addr whose connections are *ServerConn,
// waiting patiently for the request after a held response (see
// ServerConn).
//
// Accepted connections get no TCP keep-alive probes (nginx's so_keepalive
// is off by default too): the server's idle timeout already closes idle
// connections, and Go's default of turning probes on costs four
// setsockopt calls per accepted connection, about a tenth of veer's CPU
// with a new connection per request.
//
// The kernel hands over a connection only once its first bytes have
// arrived (TCP_DEFER_ACCEPT, nginx's listen ... deferred, HAProxy's
// defer-accept), so that the server's first read finds the request
// instead of EAGAIN followed by a wait: one system call and one trip
// through the poller less per connection. HTTP and TLS clients speak
// first; a client that connects and says nothing is handed over after
// deferAccept all the same, and the header read timeout starts then.
func Listen(addr string, patience time.Duration) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: deferAcceptControl}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &listener{TCPListener: ln.(*net.TCPListener), patience: patience}, nil
}

// deferAccept is how long the kernel holds a connection that has sent
// nothing yet (rounded up to its SYN-ACK retransmissions).
const deferAccept = 1 // second

func deferAcceptControl(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, deferAccept)
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt TCP_DEFER_ACCEPT", serr)
	}
	return nil
}

type listener struct {
	*net.TCPListener
	patience time.Duration
}

func (l *listener) Accept() (net.Conn, error) {
	tc, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	c := &ServerConn{patience: l.patience}
	if !c.init(tc) {
		return tc, nil
	}
	c.unlock = c.mu.Unlock
	return c, nil
}

// holdMax is the most a ServerConn holds: a larger response goes out at
// once, in one writev with what was held.
const holdMax = 32 << 10

type holdBuf struct{ b [holdMax]byte }

var holdPool = sync.Pool{New: func() any { return new(holdBuf) }}

// ServerConn is a client's connection. A response the handler marks with
// Hold is not written when the server writes it: a copy is kept and the
// next Read writes it and waits for the next request in one wait
// (Conn.SendThenRead), since after a response the next thing a
// keep-alive connection does is wait for the next request.
//
// SendThenRead's wait ends only on bytes that arrive after the response
// went out. A client that pipelines, sending its next request before the
// response to the one before, may have sent it already; so the wait is
// patient for a while only (Listen's patience), then Read looks, and
// waits on until the read deadline the server asked for.
//
// Read, Write, Hold and the deadline setters run on the connection's
// goroutine, as fasthttp's server calls them; Close may run on another
// (fasthttp's Shutdown closing idle connections) and writes a held
// response before it closes. Once no response is held and the server has
// set the read deadline after the patient wait (fasthttp does after each
// request's first byte when it has a ReadTimeout or an IdleTimeout, and
// before a hijack when it has a ReadTimeout or a WriteTimeout, as veer's
// server always has), the methods are as safe for concurrent use as
// net.Conn's: a hijacked connection's two pumps.
type ServerConn struct {
	Conn
	patience time.Duration
	armed    bool      // Hold was called: Write holds, Read sends
	rd       time.Time // the read deadline asked for since Hold
	rdSet    bool      // rd was set since Hold; if not, the server sets none
	short    bool      // the deadline in force is the patient wait's, not rd

	mu     sync.Mutex // held and hb, against Close
	held   []byte     // in hb
	hb     *holdBuf
	unlock func() // mu.Unlock, bound once
	vec    [2][]byte
	bufs   net.Buffers
}

// Hold marks the response about to be written as complete: the writes
// until the next Read are held and sent by it, up to holdMax bytes.
func (c *ServerConn) Hold() { c.armed, c.rdSet = true, false }

// Write writes p, or holds it after Hold.
func (c *ServerConn) Write(p []byte) (int, error) {
	if !c.armed {
		return c.TCPConn.Write(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hb == nil {
		c.hb = holdPool.Get().(*holdBuf)
		c.held = c.hb.b[:0]
	}
	if len(c.held)+len(p) <= holdMax {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	// Too much to hold: what is held and p go out now, in one writev.
	c.armed = false
	held := c.held
	c.vec[0], c.vec[1] = held, p
	c.bufs = c.vec[:]
	n, err := c.bufs.WriteTo(c.TCPConn)
	c.vec[0], c.vec[1] = nil, nil
	c.releaseHeld()
	return max(0, int(n)-len(held)), err
}

// releaseHeld returns the hold buffer to its pool. Under mu.
func (c *ServerConn) releaseHeld() {
	if c.hb != nil {
		holdPool.Put(c.hb)
		c.hb = nil
	}
	c.held = nil
}

// Read reads the next bytes from the client, first writing a held
// response.
func (c *ServerConn) Read(p []byte) (int, error) {
	if !c.armed {
		if c.short { // nobody set a deadline since the patient wait
			c.short = false
			_ = c.TCPConn.SetReadDeadline(c.rd)
		}
		return c.TCPConn.Read(p)
	}
	c.armed = false
	c.mu.Lock()
	if len(c.held) == 0 {
		c.releaseHeld()
		c.mu.Unlock()
		return c.Read(p)
	}
	if !c.short {
		if !c.rdSet {
			c.rd = time.Time{}
		}
		c.beginPatience()
	}
	// mu stays locked until the response is written (Close waits for it,
	// and finds nothing held after).
	held := c.held
	c.held = nil
	c.sent = c.unlock
	n, unsent, err := c.sendThenRead(held, p)
	c.mu.Lock()
	if len(unsent) > 0 && !errors.Is(err, net.ErrClosed) {
		// The wait ended before the callback wrote (a deadline already
		// past): the response still goes out, as any write would.
		_, _ = c.TCPConn.Write(unsent)
	}
	c.releaseHeld()
	c.mu.Unlock()
	if c.short && err != nil && errors.Is(err, os.ErrDeadlineExceeded) && (c.rd.IsZero() || time.Now().Before(c.rd)) {
		// Patience is over, not the server's deadline: look for a request
		// that came before the response went out, and wait on.
		c.short = false
		_ = c.TCPConn.SetReadDeadline(c.rd)
		return c.TCPConn.Read(p)
	}
	return n, err
}

// beginPatience puts the patient wait's deadline in force, when it comes
// before rd.
func (c *ServerConn) beginPatience() {
	if c.patience <= 0 {
		return
	}
	short := time.Now().Add(c.patience)
	if c.rd.IsZero() || short.Before(c.rd) {
		c.short = true
		_ = c.TCPConn.SetReadDeadline(short)
	}
}

// SetReadDeadline sets the read deadline; while a response is held, the
// patient wait's comes first. Safe for concurrent use, as net.Conn's is,
// when no response is held (a hijacked connection's pumps).
func (c *ServerConn) SetReadDeadline(t time.Time) error {
	if !c.armed && !c.short {
		return c.TCPConn.SetReadDeadline(t)
	}
	c.rd, c.rdSet, c.short = t, true, false
	if c.armed {
		c.beginPatience()
		if c.short {
			return nil
		}
	}
	return c.TCPConn.SetReadDeadline(t)
}

// SetDeadline sets the read and write deadlines.
func (c *ServerConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.TCPConn.SetWriteDeadline(t)
}

// Close writes a held response, then closes the connection.
func (c *ServerConn) Close() error {
	c.mu.Lock()
	if len(c.held) > 0 {
		_, _ = c.TCPConn.Write(c.held)
	}
	c.releaseHeld()
	c.mu.Unlock()
	return c.TCPConn.Close()
}
