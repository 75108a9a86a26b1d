// Package sock is veer's TCP connections: a request written and its
// answer waited for in one wait, without the read that finds nothing yet.
//
// Go's net.Conn.Read always reads first and waits for epoll only when the
// read fails with EAGAIN. A proxy writes a request and then reads the
// answer, which cannot have arrived yet, so that first read is a wasted
// system call, once per exchange on each side of the proxy: a third of the
// reads it makes. nginx and HAProxy read only when epoll has said there is
// something to read. Conn.SendThenRead does the same within Go's poller:
// it arms the wait for readability before writing (syscall.RawConn.Read
// resets the readiness state first, so an answer that arrives after the
// write always wakes it), writes, waits, and reads once.
//
// Conn is the backend side (upstream's Dial). ServerConn is the client
// side (Listen), where the answer is the client's next request: a response
// the handler marks with Hold is written by the next Read, the same way.
//
// On one P (GOMAXPROCS=1), those writes also wait for the goroutines that
// are already runnable, so that the writes of one round of the poller
// leave together and wake the task at the other end once; where io_uring
// can be used, SendThenRead's sends and receives of one round, and a
// client connection's plain reads, go to the kernel together, in one
// system call (uring.go), and otherwise each write yields first
// (Conn.yield).
package sock

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Dial opens a TCP connection to addr within timeout, as a *Conn. It is
// the Dial of every backend's HostClient.
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
	x := &Conn{}
	if !x.init(tc) {
		return c
	}
	return x
}

// Conn is a TCP connection. Everything but Read, SendThenRead and
// KeepDeadline is the *net.TCPConn's. SendThenRead must not run
// concurrently with itself or with Read, nor Read with itself,
// KeepDeadline not with itself.
type Conn struct {
	*net.TCPConn
	rc       syscall.RawConn
	step     func(fd uintptr) bool
	readStep func(fd uintptr) bool

	// The state of one SendThenRead, for step.
	out    []byte // still to write
	in     []byte // where the answer goes
	n      int
	err    error
	waited bool
	sent   func() // when not nil, called once the write is over (ServerConn)

	// beforeWrite, when not nil, runs before a write that can block: the
	// rest of out when the send buffer is full (ServerConn's owed write
	// deadline).
	beforeWrite func()

	// dl is the deadline KeepDeadline put in force for both directions,
	// in Unix nanoseconds, or 0 once any other deadline was set. Atomic:
	// a hijacked connection's two pumps set deadlines concurrently.
	dl atomic.Int64

	// batch: the write of a SendThenRead waits for the goroutines that
	// are already runnable (see yield). Set when the connection opens,
	// while Go runs on one P.
	batch bool

	// b, when not nil, makes SendThenRead's send and receive, and Read's
	// receive, with those of the other goroutines of the round, in one
	// system call (see uring.go); op is this connection's call. Set with
	// batch, where io_uring can be used.
	b  *batcher
	op ioOp

	// readBatch: Read batches its receive too. Set for a client's
	// connection (Listen), where reads are a request's first bytes and
	// its body; not for a backend's, where they stream answers, and
	// batching them cost 1 MiB answers nearly twice the CPU per request
	// in bench's full run of 16:08 (bench/README.md, step 13).
	readBatch bool
}

// KeepDeadline puts in force, for reads and writes, a deadline no earlier
// than t and no later than t plus slack (none when t is zero). It changes
// the timers only when the deadline in force is outside that range, and
// then to t plus slack: on a connection that carries one exchange after
// another the timers change once per slack instead of once per exchange,
// where each change is a trip through the runtime's timer heap for each
// direction and four clock reads. The deadline fires up to slack late.
func (c *Conn) KeepDeadline(t time.Time, slack time.Duration) error {
	if t.IsZero() {
		return c.SetDeadline(t)
	}
	want := t.UnixNano()
	if cur := c.dl.Load(); cur >= want && cur-want <= int64(slack) {
		return nil
	}
	d := t.Add(slack)
	c.dl.Store(0)
	if err := c.TCPConn.SetDeadline(d); err != nil {
		return err
	}
	c.dl.Store(d.UnixNano())
	return nil
}

// SetDeadline is the *net.TCPConn's; KeepDeadline sets the timers again
// after it.
func (c *Conn) SetDeadline(t time.Time) error {
	c.dl.Store(0)
	return c.TCPConn.SetDeadline(t)
}

// SetReadDeadline is the *net.TCPConn's; KeepDeadline sets the timers
// again after it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dl.Store(0)
	return c.TCPConn.SetReadDeadline(t)
}

// SetWriteDeadline is the *net.TCPConn's; KeepDeadline sets the timers
// again after it.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.dl.Store(0)
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *Conn) init(tc *net.TCPConn) bool {
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	c.TCPConn, c.rc = tc, rc
	c.step = c.stepFD // bound once: a method value made per call would allocate
	c.readStep = c.readStepFD
	c.batch = runtime.GOMAXPROCS(0) == 1
	if c.batch {
		if c.b = batching(); c.b != nil {
			c.op.done = make(chan struct{}, 1)
		}
	}
	return true
}

// yield lets the goroutines that are already runnable run up to their own
// waits before this one writes, when the connection batches.
//
// On one P, the goroutines that one poll of epoll readied run one after
// another, and each one writes its request (to a backend) or its response
// (to a client) and then waits. Between two of those writes the reader at
// the other end, a backend or a client's event loop, often has nothing
// left and goes back to sleep in epoll_wait, and the next write must wake
// it: one wake-up per write instead of one per round. Waking a task on
// another CPU is the dearest thing the writer does on a virtual machine
// (the CPU it wakes is halted, and kicking it goes through the
// hypervisor). Yielding first sends the round's writes out back to back,
// as an event loop that handles everything one poll returned before it
// polls again tends to do. The cost is one trip through the scheduler per
// write (about 100 ns on bench's VM when nothing else is runnable,
// BenchmarkYield), and the goroutine's answer leaves at the end of the
// round instead of in its middle; where the reader at the other end never
// sleeps, the gaps between rounds can let it (see bench/README.md).
//
// With more than one P, a yield puts the goroutine on the global run
// queue, where an idle P's thread may be woken to take it: that is not
// what this is for, so there the write goes out at once, as before.
func (c *Conn) yield() {
	if c.batch && c.b == nil { // the batcher waits for the round itself
		runtime.Gosched()
	}
}

// Read is the *net.TCPConn's; on a client's connection with a batcher
// (readBatch), the receive goes to the kernel with the round's others
// (see uring.go), and waits for readiness in Go's poller when it finds
// nothing.
func (c *Conn) Read(p []byte) (int, error) {
	if !c.readBatch || len(p) == 0 {
		return c.TCPConn.Read(p)
	}
	c.in, c.n, c.err = p, 0, nil
	err := c.rc.Read(c.readStep)
	n, rerr := c.n, c.err
	c.in, c.err = nil, nil
	if rerr == io.EOF {
		return n, rerr
	}
	if rerr != nil {
		return n, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	}
	if err != nil {
		// The raw connection's error (closed, or the deadline passed), as
		// Read's own: an *net.OpError "read" around the poller's error.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return n, nil
}

// readStepFD is Read's callback, and the end of SendThenRead's: a
// receive into in, and false (wait again) when it finds nothing.
func (c *Conn) readStepFD(fd uintptr) bool {
	for {
		n, err := c.recv(fd, c.in)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != 0:
			c.err = os.NewSyscallError("recvfrom", err)
		case n == 0:
			c.err = io.EOF
		default:
			c.n = n
		}
		return true
	}
}

// SendThenRead writes out and then reads the answer into p, as a Write
// followed by a Read would, in one wait: the wait for the answer is armed
// before out is written, so no answer can slip past it, and the read that
// Go's Read makes first, which right after a request finds nothing and
// fails with EAGAIN, is not made.
//
// Bytes that were already waiting on the connection before the call do
// not end the wait: only bytes that arrive after it do, or the read
// deadline, which bounds the whole call. When the socket's send buffer
// cannot take out at once, the rest is written with Write and the answer
// read with Read, as usual.
//
// On one P, the goroutines already runnable go first (see yield), so that
// the writes of one round leave together.
func (c *Conn) SendThenRead(out, p []byte) (int, error) {
	c.yield()
	n, _, err := c.sendThenRead(out, p)
	return n, err
}

// sendThenRead is SendThenRead, and also returns what of out was not
// sent when it fails before writing all of it.
func (c *Conn) sendThenRead(out, p []byte) (int, []byte, error) {
	c.out, c.in, c.n, c.err, c.waited = out, p, 0, nil, false
	err := c.rc.Read(c.step)
	rest, n, rerr := c.out, c.n, c.err
	c.out, c.in, c.err = nil, nil, nil
	if len(rest) > 0 && rerr == nil && err == nil {
		// The send buffer is full: the rest waits for room as any write does.
		if c.beforeWrite != nil {
			c.beforeWrite()
		}
		_, err := c.TCPConn.Write(rest)
		c.wrote()
		if err != nil {
			return 0, nil, err
		}
		n, err := c.Read(p)
		return n, nil, err
	}
	c.wrote() // when the wait ended before the callback wrote anything
	switch {
	case rerr != nil:
		return 0, nil, rerr // the write or the read failed
	case err != nil:
		return 0, rest, err // closed, or the deadline passed
	}
	return n, nil, nil
}

// wrote calls and clears sent.
func (c *Conn) wrote() {
	if f := c.sent; f != nil {
		c.sent = nil
		f()
	}
}

// send and recv make the system calls without telling the scheduler
// (syscall.RawSyscall6): on a non-blocking socket, with at most a few
// buffers' worth of bytes, they return in microseconds, and a P announced
// as in a system call is one Go's sysmon hands to another thread when the
// call outlasts its 20µs tick, which on one core is two thread switches
// and two futex calls for nothing (about 750 a second under load on
// bench's get64 before). They are sendto and recvfrom, as HAProxy's, not
// write and read: the socket calls skip the file layer's work (position
// lock, write accounting, fsnotify) that a socket does not need. p must
// not be empty.
func sendFlags(fd uintptr, p []byte, flags int) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

func recvFlags(fd uintptr, p []byte, flags int) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// send and recv are SendThenRead's and Read's calls: with the round's
// others when the connection has a batcher, else on their own.
func (c *Conn) send(fd uintptr, p []byte) (int, syscall.Errno) {
	if raceEnabled {
		raceWrote(fd)
	}
	if c.b == nil {
		return sendFlags(fd, p, syscall.MSG_NOSIGNAL)
	}
	return c.batched(opSend, fd, p)
}

func (c *Conn) recv(fd uintptr, p []byte) (n int, err syscall.Errno) {
	if c.b == nil {
		n, err = recvFlags(fd, p, 0)
	} else {
		n, err = c.batched(opRecv, fd, p)
	}
	if raceEnabled && n > 0 {
		raceRead(fd)
	}
	return n, err
}

func (c *Conn) batched(code uint8, fd uintptr, p []byte) (int, syscall.Errno) {
	o := &c.op
	o.code, o.fd, o.buf = code, int32(fd), p
	c.b.do(o)
	o.buf = nil
	return o.n, o.err
}

// stepFD is SendThenRead's callback: it runs when the wait starts and
// again each time epoll reports the socket readable, and returns true
// when it is done.
func (c *Conn) stepFD(fd uintptr) bool {
	for len(c.out) > 0 {
		n, err := c.send(fd, c.out)
		if n > 0 {
			c.out = c.out[n:]
		}
		switch err {
		case 0:
		case syscall.EINTR:
		case syscall.EAGAIN:
			return true // SendThenRead writes the rest
		default:
			c.err = os.NewSyscallError("sendto", err)
			c.wrote()
			return true
		}
	}
	if !c.waited {
		c.waited = true
		c.wrote()
		return false // wait for the answer
	}
	return c.readStepFD(fd) // the answer, or false to wait again
}
