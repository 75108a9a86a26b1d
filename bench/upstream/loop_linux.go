//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// The epoll engine: one goroutine on one locked thread runs a level-
// triggered epoll loop over every listener and connection, parses request
// heads with bytes.Index and answers from memory. It does per request what
// an origin must (one read, one write, a share of one epoll_wait) and
// nothing else: no goroutine switch, no timer, no deadline, no clock read.
// That matters here because wrk and the upstream share one CPU, and what
// they spend per request is the ceiling every proxy runs into.

const (
	maxHead  = 64 << 10 // a head longer than this is answered 431 and closed
	readSize = 64 << 10 // one read takes at most this much
	maxIOV   = 16       // iovecs per writev
)

// parse states of a connection's input.
const (
	stHead      = iota // waiting for a whole request head
	stBody             // skipping left bytes of a Content-Length body
	stChunkSize        // waiting for a chunk-size line
	stChunkData        // skipping left bytes of chunk data and its CRLF
	stTrailer          // skipping trailer lines up to the empty one
)

// port is one listening socket and the requests it has counted.
type port struct {
	fd    int
	addr  netip.AddrPort
	count int64
}

// econn is one accepted connection.
type econn struct {
	fd    int
	port  *port
	in    []byte   // input not yet parsed (a partial head or chunk line)
	state int      // stHead, ...
	left  int64    // bytes still to skip in stBody / stChunkData
	req   request  // the request whose body is being skipped
	path  []byte   // c.req.path's bytes: the read buffer is reused before a body ends
	q     [][]byte // output not yet written, in order
	buf   []byte   // heads and small bodies; q holds slices of it
	mark  int      // buf[mark:] is output not yet in q
	close bool     // close once q is written
	out   bool     // EPOLLOUT (not EPOLLIN) is what the connection waits for
}

// request is what an answer depends on.
type request struct {
	head  bool   // HEAD: the answer has no body
	close bool   // the client asked to close, or spoke HTTP/1.0 without keep-alive
	path  []byte // in the read buffer until consume copies it to econn.path
}

// loop is the engine: the listeners, their connections and the shared read
// buffer. Only its own goroutine touches it.
type loop struct {
	ep    int
	ports []*port  // by file descriptor
	conns []*econn // by file descriptor
	cache *bodies
	rbuf  []byte
	evs   []syscall.EpollEvent
	iov   []syscall.Iovec
}

// newLoop listens on addrs (host:port, port 0 picks one).
func newLoop(addrs []string, cache *bodies) (*loop, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	l := &loop{ep: ep, cache: cache,
		rbuf: make([]byte, readSize), evs: make([]syscall.EpollEvent, 256), iov: make([]syscall.Iovec, 0, maxIOV)}
	for _, a := range addrs {
		p, err := listenFD(a)
		if err != nil {
			l.closeAll()
			return nil, err
		}
		l.ports = grow(l.ports, p.fd)
		l.ports[p.fd] = p
		if err := l.ctl(syscall.EPOLL_CTL_ADD, p.fd, syscall.EPOLLIN); err != nil {
			l.closeAll()
			return nil, err
		}
	}
	return l, nil
}

func (l *loop) closeAll() {
	for _, p := range l.ports {
		if p != nil {
			syscall.Close(p.fd)
		}
	}
	syscall.Close(l.ep)
}

// listenFD opens a non-blocking listening socket on addr.
func listenFD(addr string) (*port, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	family := syscall.AF_INET
	var sa syscall.Sockaddr = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen %s: socket: %w", addr, err)
	}
	fail := func(what string, err error) (*port, error) {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen %s: %s: %w", addr, what, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := syscall.Listen(fd, 4096); err != nil {
		return fail("listen", err)
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	switch s := got.(type) {
	case *syscall.SockaddrInet4:
		ap = netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port))
	case *syscall.SockaddrInet6:
		ap = netip.AddrPortFrom(netip.AddrFrom16(s.Addr), uint16(s.Port))
	}
	return &port{fd: fd, addr: ap}, nil
}

func (l *loop) ctl(op, fd int, events uint32) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	if err := syscall.EpollCtl(l.ep, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// grow returns s long enough to index it with fd, doubling it at least
// when it must grow, so that accepting n connections copies O(n) entries.
func grow[T any](s []*T, fd int) []*T {
	if fd >= len(s) {
		s = append(s, make([]*T, max(fd+1, 2*len(s))-len(s))...)
	}
	return s
}

// run serves until epoll_wait fails for a reason other than EINTR.
//
// Every system call here is a raw one (syscall.RawSyscall6), which the
// scheduler is not told about: the socket calls do not block, and when
// epoll_wait does, this goroutine has nothing else to do. A call the
// scheduler knows about costs the runtime's bookkeeping on entry and exit
// and keeps sysmon polling every 20 µs, a measurable share of the CPU
// this process shares with wrk. The runtime still preempts this goroutine
// (for GC, say) by a signal, which ends the wait with EINTR.
func (l *loop) run() error {
	runtime.LockOSThread()
	for {
		n, errno := epollWait(l.ep, l.evs, 0)
		if errno == 0 && n == 0 {
			n, errno = epollWait(l.ep, l.evs, 1000)
		}
		if errno != 0 {
			if errno == syscall.EINTR {
				continue
			}
			return fmt.Errorf("epoll_wait: %w", errno)
		}
		for _, ev := range l.evs[:n] {
			fd := int(ev.Fd)
			if fd < len(l.ports) && l.ports[fd] != nil {
				l.accept(l.ports[fd])
				continue
			}
			var c *econn
			if fd < len(l.conns) {
				c = l.conns[fd]
			}
			if c == nil {
				continue
			}
			if c.out {
				l.flush(c)
			} else {
				l.read(c)
			}
		}
	}
}

func (l *loop) accept(p *port) {
	for {
		fd, _, err := syscall.Accept4(p.fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or a connection that went away before accept
		}
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if l.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN) != nil {
			syscall.Close(fd)
			continue
		}
		l.conns = grow(l.conns, fd)
		l.conns[fd] = &econn{fd: fd, port: p}
	}
}

func (l *loop) drop(c *econn) {
	l.conns[c.fd] = nil
	syscall.Close(c.fd) // also takes it out of the epoll set
}

// read takes what the connection has, answers every request it completes,
// and writes the answers.
func (l *loop) read(c *econn) {
	n, err := rawIO(syscall.SYS_RECVFROM, c.fd, l.rbuf, 0)
	if n <= 0 {
		if err == syscall.EAGAIN || err == syscall.EINTR {
			return
		}
		l.drop(c) // EOF or a reset
		return
	}
	data := l.rbuf[:n]
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	rest, ok := l.consume(c, data)
	if !ok {
		c.close = true
		rest = nil
	}
	c.in = append(c.in[:0], rest...)
	l.flush(c)
}

// consume parses data, queueing an answer for each request whose body is
// complete, and returns what is left of data for the next read. It is false
// when the connection must close after its answers (a bad request).
func (l *loop) consume(c *econn, data []byte) ([]byte, bool) {
	for len(data) > 0 && !c.close {
		switch c.state {
		case stHead:
			end := bytes.Index(data, crlfcrlf)
			if end < 0 {
				if len(data) > maxHead {
					l.answerError(c, fasthttp.StatusRequestHeaderFieldsTooLarge)
					return nil, false
				}
				return data, true
			}
			r, body, chunked, ok := parseHead(data[:end+2])
			if !ok {
				l.answerError(c, fasthttp.StatusBadRequest)
				return nil, false
			}
			data = data[end+4:]
			c.path = append(c.path[:0], r.path...)
			r.path = c.path
			c.req = r
			switch {
			case chunked:
				c.state = stChunkSize
			case body > 0:
				c.state, c.left = stBody, body
			default:
				l.answer(c)
			}
		case stBody, stChunkData:
			k := min(int64(len(data)), c.left)
			data, c.left = data[k:], c.left-k
			if c.left == 0 {
				if c.state == stBody {
					c.state = stHead
					l.answer(c)
				} else {
					c.state = stChunkSize
				}
			}
		case stChunkSize, stTrailer:
			nl := bytes.IndexByte(data, '\n')
			if nl < 0 {
				if len(data) > maxHead {
					l.answerError(c, fasthttp.StatusBadRequest)
					return nil, false
				}
				return data, true
			}
			line := bytes.TrimRight(data[:nl], "\r")
			data = data[nl+1:]
			if c.state == stTrailer {
				if len(line) == 0 {
					c.state = stHead
					l.answer(c)
				}
				continue
			}
			size, ok := chunkSize(line)
			if !ok {
				l.answerError(c, fasthttp.StatusBadRequest)
				return nil, false
			}
			if size == 0 {
				c.state = stTrailer
			} else {
				c.state, c.left = stChunkData, size+2 // the data and its CRLF
			}
		}
	}
	return data, true
}

var (
	crlfcrlf   = []byte("\r\n\r\n")
	hdrLength  = []byte("content-length")
	hdrTE      = []byte("transfer-encoding")
	hdrConn    = []byte("connection")
	tokChunked = []byte("chunked")
	tokClose   = []byte("close")
	tokKeep    = []byte("keep-alive")
)

// parseHead reads a request head (up to and including the last header's
// CRLF): the request, the Content-Length body size, whether the body is
// chunked, and false when the head is not one a proxy would send.
func parseHead(h []byte) (r request, body int64, chunked, ok bool) {
	eol := bytes.Index(h, []byte("\r\n"))
	line := h[:eol]
	h = h[eol+2:]
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, version, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || !bytes.HasPrefix(version, []byte("HTTP/1.")) {
		return r, 0, false, false
	}
	r.head = string(method) == "HEAD"
	r.path = target
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		r.path = target[:q]
	}
	http10 := string(version) == "HTTP/1.0"
	keepAlive := false
	for len(h) > 0 {
		eol = bytes.Index(h, []byte("\r\n"))
		if eol < 0 {
			return r, 0, false, false
		}
		name, value, found := bytes.Cut(h[:eol], []byte(":"))
		h = h[eol+2:]
		if !found {
			return r, 0, false, false
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, hdrLength):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return r, 0, false, false
			}
			body = n
		case bytes.EqualFold(name, hdrTE):
			chunked = chunked || containsToken(value, tokChunked)
		case bytes.EqualFold(name, hdrConn):
			r.close = r.close || containsToken(value, tokClose)
			keepAlive = keepAlive || containsToken(value, tokKeep)
		}
	}
	if http10 && !keepAlive {
		r.close = true
	}
	if chunked {
		body = 0
	}
	return r, body, chunked, true
}

// containsToken reports whether a comma-separated header value lists tok.
func containsToken(v, tok []byte) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

// chunkSize parses a chunk-size line (hex digits, then any extension).
func chunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	n, err := strconv.ParseInt(string(line), 16, 64)
	return n, err == nil && n >= 0 && len(line) > 0
}

// answer queues the answer to c.req.
func (l *loop) answer(c *econn) {
	code, body := respond(c.req.path, &c.port.count, l.cache)
	l.queue(c, code, body, c.req.head, c.req.close)
}

// answerError queues an error answer after which the connection closes.
func (l *loop) answerError(c *econn, code int) {
	l.queue(c, code, []byte(fasthttp.StatusMessage(code)+"\n"), false, true)
}

// bigBody is the size from which a body is written from the cache, not
// copied next to its head.
const bigBody = 4 << 10

func (l *loop) queue(c *econn, code int, body []byte, head, closing bool) {
	t := append(c.buf, "HTTP/1.1 "...)
	t = strconv.AppendInt(t, int64(code), 10)
	t = append(t, ' ')
	t = append(t, fasthttp.StatusMessage(code)...)
	t = append(t, "\r\nServer: bench-upstream\r\nContent-Length: "...)
	t = strconv.AppendInt(t, int64(len(body)), 10)
	if closing {
		t = append(t, "\r\nConnection: close"...)
		c.close = true
	}
	t = append(t, "\r\n\r\n"...)
	if head {
		body = nil
	}
	if len(body) < bigBody {
		c.buf = append(t, body...)
		return
	}
	// Later appends to buf go after t's end (or to a new array), so the
	// slice of it in q stays as it is.
	c.buf = t
	c.q = append(c.q, t[c.mark:], body)
	c.mark = len(t)
}

// flush writes what c has queued. What the socket does not take now waits
// for EPOLLOUT; while it waits, the connection's input waits in the socket.
func (l *loop) flush(c *econn) {
	if len(c.buf) > c.mark {
		c.q = append(c.q, c.buf[c.mark:])
		c.mark = len(c.buf)
	}
	for len(c.q) > 0 {
		n, err := l.writev(c.fd, c.q)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			if !c.out {
				c.out = true
				if l.ctl(syscall.EPOLL_CTL_MOD, c.fd, syscall.EPOLLOUT) != nil {
					l.drop(c)
				}
			}
			return
		}
		if err != 0 {
			l.drop(c)
			return
		}
		done := 0 // buffers written whole
		for done < len(c.q) && n >= len(c.q[done]) {
			n -= len(c.q[done])
			done++
		}
		if done < len(c.q) {
			c.q[done] = c.q[done][n:]
		}
		k := copy(c.q, c.q[done:])
		clear(c.q[k:])
		c.q = c.q[:k]
	}
	c.q = c.q[:0]
	c.buf, c.mark = c.buf[:0], 0
	if c.close {
		l.drop(c)
		return
	}
	if c.out {
		c.out = false
		// Input waited in the socket: what read left in c.in is never a
		// whole request.
		if l.ctl(syscall.EPOLL_CTL_MOD, c.fd, syscall.EPOLLIN) != nil {
			l.drop(c)
		}
	}
}

// writev writes the first maxIOV buffers of q with one system call.
func (l *loop) writev(fd int, q [][]byte) (int, syscall.Errno) {
	if len(q) == 1 {
		return rawIO(syscall.SYS_SENDTO, fd, q[0], syscall.MSG_NOSIGNAL)
	}
	iov := l.iov[:0]
	for _, b := range q[:min(len(q), maxIOV)] {
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	runtime.KeepAlive(q)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// rawIO is sendto or recvfrom on a non-blocking socket, with flags.
func rawIO(trap uintptr, fd int, p []byte, flags int) (int, syscall.Errno) {
	r, _, errno := syscall.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), uintptr(flags), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

// epollWait is epoll_pwait (epoll_wait on every architecture) with no
// signal mask and a timeout in milliseconds.
func epollWait(ep int, evs []syscall.EpollEvent, msec int) (int, syscall.Errno) {
	r, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), uintptr(msec), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

// serveLoop runs the epoll engine on addrs; it returns only on failure.
func serveLoop(addrs []string, cache *bodies, ready func(*loop)) error {
	l, err := newLoop(addrs, cache)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(l)
	}
	return l.run()
}
