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
	c.beforeWrite = c.payWriteDeadline
	c.readBatch = c.b != nil
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
// Deadlines reach the poller's timers only when a read or write can wait
// on them. A read deadline set after the patient wait ended with bytes
// (fasthttp sets one after each request's first byte) is put in force by
// the next Read, before it reads: a request that came whole in that wait
// needs no other read. A write deadline set while a response is held
// (fasthttp sets one after each handler) is put in force before the next
// write that can block: the held response goes out with a send that does
// not wait. Each would otherwise be a trip through the runtime's timer
// heap per request, for a timer that is replaced before it can fire.
//
// Read, Write, Hold and the deadline setters run on the connection's
// goroutine, as fasthttp's server calls them; Close may run on another
// (fasthttp's Shutdown closing idle connections) and writes a held
// response before it closes. Once no response is held and SetDeadline
// has put a deadline in force (fasthttp's server calls it before it hands
// a connection to a hijack handler), the methods are as safe for
// concurrent use as net.Conn's: a hijacked connection's two pumps, and a
// third goroutine that ends both with SetDeadline. From then on the read
// side's state is only read, and the write side's is under mu.
type ServerConn struct {
	Conn
	patience time.Duration
	armed    bool      // Hold was called: Write holds, Read sends
	rd       time.Time // the read deadline asked for since Hold
	rdSet    bool      // rd was set since Hold; if not, the server sets none
	short    bool      // the deadline in force is the patient wait's, not rd
	kept     time.Time // the patient wait's deadline in force, or zero after any other

	mu     sync.Mutex // held, hb, wd and wdOwed, against Close and the writer pump
	held   []byte     // in hb
	wd     time.Time  // the write deadline asked for while a response was held
	wdOwed bool       // wd is not in force yet
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
		c.mu.Lock()
		c.payWriteDeadline()
		c.mu.Unlock()
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
	c.payWriteDeadline()
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
// response (after the goroutines already runnable, as SendThenRead).
func (c *ServerConn) Read(p []byte) (int, error) {
	if !c.armed {
		if c.short { // the patient wait's deadline is in force, not rd
			c.short = false
			_ = c.setReadDeadline(c.rd)
		}
		return c.Conn.Read(p)
	}
	c.armed = false
	c.yield() // before mu: Close must not wait on a yielding Read
	c.mu.Lock()
	if len(c.held) == 0 {
		c.releaseHeld()
		c.mu.Unlock()
		return c.Read(p)
	}
	if !c.rdSet {
		// The server set no read deadline since Hold (SetReadDeadline
		// begins the patient wait when it does): it wants none.
		c.rd = time.Time{}
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
		c.payWriteDeadline()
		_, _ = c.TCPConn.Write(unsent)
	}
	c.releaseHeld()
	c.mu.Unlock()
	if c.short && err != nil && errors.Is(err, os.ErrDeadlineExceeded) && (c.rd.IsZero() || time.Now().Before(c.rd)) {
		// Patience is over, not the server's deadline: look for a request
		// that came before the response went out, and wait on.
		c.short = false
		_ = c.setReadDeadline(c.rd)
		return c.Conn.Read(p)
	}
	return n, err
}

// beginPatience puts the patient wait's deadline in force, when it comes
// before rd. A patient deadline still in force from the response before
// (its request came whole, so nothing replaced it) is kept while it ends
// at least three quarters of the patience from now: the timers change
// once per quarter of it, not once per response.
func (c *ServerConn) beginPatience() {
	if c.patience <= 0 {
		return
	}
	now := time.Now()
	short := now.Add(c.patience)
	if c.rd.IsZero() || short.Before(c.rd) {
		c.short = true
		if c.kept.After(short.Add(-c.patience/4)) && !c.kept.After(short) {
			return
		}
		_ = c.setReadDeadline(short)
		c.kept = short
	}
}

// setReadDeadline puts t in force for reads. It writes kept only when
// kept is set, so that once it is zero (after SetDeadline) a hijacked
// connection's goroutines only read the read side's state.
func (c *ServerConn) setReadDeadline(t time.Time) error {
	if !c.kept.IsZero() {
		c.kept = time.Time{}
	}
	return c.TCPConn.SetReadDeadline(t)
}

// SetReadDeadline sets the read deadline. While a response is held, the
// patient wait's comes first; after the patient wait, the next Read puts
// t in force before it reads.
func (c *ServerConn) SetReadDeadline(t time.Time) error {
	if !c.armed && !c.short {
		return c.setReadDeadline(t)
	}
	c.rd, c.rdSet = t, true
	if !c.armed {
		return nil // short stays: Read puts rd in force
	}
	c.short = false
	c.beginPatience()
	if c.short {
		return nil
	}
	return c.setReadDeadline(t)
}

// SetWriteDeadline sets the write deadline; while a response is held, it
// is put in force before the next write that can block.
func (c *ServerConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed {
		c.wd, c.wdOwed = t, true
		return nil
	}
	c.wdOwed = false
	return c.Conn.SetWriteDeadline(t)
}

// payWriteDeadline puts an owed write deadline in force. Under mu.
func (c *ServerConn) payWriteDeadline() {
	if c.wdOwed {
		c.wdOwed = false
		_ = c.Conn.SetWriteDeadline(c.wd)
	}
}

// SetDeadline sets the read and write deadlines. When no response is
// held, both are in force when it returns, the read deadline too.
func (c *ServerConn) SetDeadline(t time.Time) error {
	if !c.armed && c.short {
		c.short = false
		c.rd, c.rdSet = t, true
		if err := c.setReadDeadline(t); err != nil {
			return err
		}
	} else if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// Close writes a held response, then closes the connection.
func (c *ServerConn) Close() error {
	c.mu.Lock()
	if len(c.held) > 0 {
		c.payWriteDeadline()
		_, _ = c.TCPConn.Write(c.held)
	}
	c.releaseHeld()
	c.mu.Unlock()
	return c.TCPConn.Close()
}
