package proxy

// WebSockets and other protocol upgrades (RFC 9110 7.8, RFC 6455 4.1).
//
// A request with "Connection: Upgrade" and an Upgrade header is routed like
// any other (route, then version by override, rules, sticky cookie, sticky
// header or weights, then backend), but not through the backend's
// HostClient: veer dials the backend itself, writes the request head with
// Upgrade and Connection kept (the one exception to hop-by-hop removal),
// and reads the answer. A 101 is relayed to the client and both connections
// become a byte tunnel (fasthttp's Hijack), pumped both ways until either
// side closes or nothing moves for timeouts.upgrade_idle. Any other answer
// (the backend refused the upgrade) is relayed as a normal response.
//
// The 101 counts in the version's requests (code 1xx) and window as a
// success; a failure to connect counts as the failure it is, and refused
// connections are retried on another backend of the version and then,
// for a version other than stable, on stable, as for ordinary requests.
// fasthttp's Server.Shutdown does not know hijacked
// connections, so the Proxy tracks its tunnels and CloseUpgraded closes
// them at the end of a drain.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/accesslog"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

var (
	hdrUpgrade = []byte("Upgrade")
	strUpgrade = []byte("Upgrade")
)

// maxRefusalBody bounds the body of a backend's answer that refuses an
// upgrade; a larger one is a 502.
const maxRefusalBody = 1 << 20

// upgrades tracks the open tunnels of a Proxy. Safe for concurrent use.
type upgrades struct {
	mu      sync.Mutex
	open    map[*tunnel]struct{}
	closing bool // CloseUpgraded ran: no new tunnel
	n       atomic.Int64
}

// isUpgrade reports whether req asks to switch protocols: an Upgrade header
// and "upgrade" among Connection's tokens.
func isUpgrade(req *fasthttp.Request) bool {
	return len(req.Header.PeekBytes(hdrUpgrade)) > 0 && req.Header.ConnectionUpgrade()
}

// Upgraded returns the number of open upgraded connections (tunnels).
func (p *Proxy) Upgraded() int64 { return p.up.n.Load() }

// CloseUpgraded closes every open tunnel, and any tunnel that would open
// after it, and returns how many it closed. The drain calls it last, once
// ordinary requests are done.
func (p *Proxy) CloseUpgraded() int {
	p.up.mu.Lock()
	p.up.closing = true
	ts := make([]*tunnel, 0, len(p.up.open))
	for t := range p.up.open {
		ts = append(ts, t)
	}
	p.up.mu.Unlock()
	for _, t := range ts {
		t.close()
	}
	return len(ts)
}

func (u *upgrades) add(t *tunnel) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closing {
		return false
	}
	if u.open == nil {
		u.open = map[*tunnel]struct{}{}
	}
	u.open[t] = struct{}{}
	u.n.Add(1)
	return true
}

func (u *upgrades) remove(t *tunnel) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.open[t]; ok {
		delete(u.open, t)
		u.n.Add(-1)
	}
}

// upgrade serves an upgrade request on backend b of version v.
func (p *Proxy) upgrade(ctx *fasthttp.RequestCtx, t *router.Table, r *router.Route, v *router.Version, b *router.Backend, start time.Time, pin bool, has int) {
	req := &ctx.Request
	if cl := req.Header.ContentLength(); cl > 0 || cl == -1 {
		// A WebSocket handshake is a GET without a body (RFC 6455 4.1);
		// a body would have to be streamed under limits.go's rules before
		// the tunnel, for no client that exists.
		ctx.Error("veer: an upgrade request must not have a body\n", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
		if p.AccessLog != nil {
			p.logAccess(ctx, r, v, nil)
		}
		return
	}
	proto := append([]byte(nil), req.Header.PeekBytes(hdrUpgrade)...)
	p.prepareRequest(ctx, t, has)
	req.Header.SetBytesKV(hdrConn, strUpgrade)
	req.Header.SetBytesKV(hdrUpgrade, proto)
	p.inflight.Add(1)
	defer p.inflight.Add(-1)

	attempts := *r.Config.Retries.Attempts
	tryStart := start
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var conn net.Conn
	var br *bufio.Reader
	failedOver := false
	for try := 0; ; try++ {
		var err error
		conn, br, err = p.openUpgrade(req, r, b, resp)
		end := p.Now()
		if err == nil {
			break
		}
		status, reason := Classify(err)
		v.Metrics.Failures[reason].Inc()
		v.Window.Record(end, end.Sub(tryStart), true)
		p.outlier(r, v, b, true, end)
		next := (*router.Backend)(nil)
		if try < attempts && reason == metrics.FailConnect {
			next = v.PickOther(end.UnixNano(), b)
		}
		if next == nil && reason == metrics.FailConnect && v != r.Stable && !failedOver {
			// As for ordinary requests (forward): nothing reached v's
			// backends, so stable takes the upgrade, and the failure above
			// counts against v.
			if next = r.Stable.PickBackend(end.UnixNano()); next != nil {
				v, failedOver, pin = r.Stable, true, false
			}
		}
		if next != nil {
			b, tryStart = next, end
			continue
		}
		ctx.Error(failureText[status], status)
		if status == fasthttp.StatusServiceUnavailable {
			ctx.Response.Header.SetBytesV("Retry-After", retryAfter5)
		}
		ctx.Response.Header.SetBytesKV(hdrVersion, v.NameBytes())
		p.count(v, status, start)
		p.log.Debug("upgrade: upstream failed", "route", r.Name, "version", v.Name, "backend", b.Addr, "err", err)
		if p.AccessLog != nil {
			p.logAccess(ctx, r, v, b)
		}
		return
	}
	end := p.Now()
	status := resp.StatusCode()
	failed := status >= 500
	v.Window.Record(end, end.Sub(tryStart), failed)
	p.outlier(r, v, b, failed, end)

	if status != fasthttp.StatusSwitchingProtocols {
		// The backend answered without switching: relay it as a response.
		conn.Close()
		resp.CopyTo(&ctx.Response)
		out := &ctx.Response
		removeResponseHopByHop(&out.Header)
		out.Header.ResetConnectionClose()
		out.Header.DelBytes(hdrVersion)
		out.Header.SetBytesKV(hdrVersion, v.NameBytes())
		if name := r.Config.Sticky.Cookie; name != "" && pin {
			setStickyCookie(out, name, v.Name)
		}
		p.count(v, status, start)
		if p.AccessLog != nil {
			p.logAccess(ctx, r, v, b)
		}
		return
	}

	tun := &tunnel{p: p, backend: conn, br: br, idle: r.Config.Timeouts.UpgradeIdle.D()}
	tun.head = switchingHead(resp, v, r.Config.Sticky.Cookie, pin)
	if !p.up.add(tun) { // draining is over: no new tunnel
		conn.Close()
		ctx.Error("veer: shutting down\n", fasthttp.StatusServiceUnavailable)
		ctx.SetConnectionClose()
		return
	}
	p.count(v, status, start)
	if p.AccessLog != nil {
		tun.entry = p.accessEntry(ctx, r, v, b)
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(tun.serve)
}

// openUpgrade connects to b (with TLS when the version's backends are
// HTTPS), sends req's head (it has no body) and reads the answer's head
// into resp (and its body, when it is not a 101). The returned reader
// holds what the backend sent after the head: the first bytes of the
// tunnel.
func (p *Proxy) openUpgrade(req *fasthttp.Request, r *router.Route, b *router.Backend, resp *fasthttp.Response) (net.Conn, *bufio.Reader, error) {
	to := r.Config.Timeouts
	conn, err := (&net.Dialer{Timeout: to.Connect.D()}).Dial("tcp", b.Addr)
	if err != nil {
		return nil, nil, err
	}
	if b.Client.IsTLS {
		cfg := b.Client.TLSConfig.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(b.Addr)
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		hctx, cancel := context.WithTimeout(context.Background(), to.Connect.D())
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			// A failed handshake is a failure to connect (Classify).
			return nil, nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
		}
		conn = tc
	}
	_ = conn.SetDeadline(time.Now().Add(to.ResponseHeader.D()))
	bw := bufio.NewWriterSize(conn, 4096)
	writeRequestHead(bw, req)
	if err := bw.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	if err := resp.ReadLimitBody(br, maxRefusalBody); err != nil {
		conn.Close()
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // a reset, not "no answer yet"
		}
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// writeRequestHead writes the request line (origin-form, HTTP/1.1) and
// every header of req.
func writeRequestHead(w *bufio.Writer, req *fasthttp.Request) {
	h := &req.Header
	w.Write(h.Method())
	w.WriteByte(' ')
	if uri := h.RequestURI(); len(uri) > 0 && uri[0] == '/' {
		w.Write(uri)
	} else { // absolute-form: the Handler took the host from it
		u := req.URI()
		w.Write(u.PathOriginal())
		if q := u.QueryString(); len(q) > 0 {
			w.WriteByte('?')
			w.Write(q)
		}
	}
	w.WriteString(" HTTP/1.1\r\n")
	for k, v := range h.All() {
		w.Write(k)
		w.WriteString(": ")
		w.Write(v)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// switchingHead is the 101 sent to the client: the backend's headers less
// the hop-by-hop ones and framing, with its Upgrade, Connection: Upgrade,
// X-Veer-Version and the sticky cookie.
func switchingHead(resp *fasthttp.Response, v *router.Version, cookie string, pin bool) []byte {
	h := &resp.Header
	proto := append([]byte(nil), h.PeekBytes(hdrUpgrade)...)
	removeResponseHopByHop(h)
	h.ResetConnectionClose()
	h.DelBytes(hdrVersion)
	h.SetNoDefaultContentType(true)
	head := make([]byte, 0, 512)
	head = append(head, "HTTP/1.1 101 "...)
	if msg := h.StatusMessage(); len(msg) > 0 {
		head = append(head, msg...)
	} else {
		head = append(head, "Switching Protocols"...)
	}
	head = append(head, "\r\n"...)
	for k, val := range h.All() {
		if framing(k) {
			continue
		}
		head = appendHeader(head, k, val)
	}
	head = appendHeader(head, hdrConn, strUpgrade)
	if len(proto) > 0 {
		head = appendHeader(head, hdrUpgrade, proto)
	}
	head = appendHeader(head, hdrVersion, v.NameBytes())
	if cookie != "" && pin {
		c := fasthttp.AcquireCookie()
		c.SetKey(cookie)
		c.SetValue(v.Name)
		c.SetPath("/")
		c.SetHTTPOnly(true)
		c.SetSameSite(fasthttp.CookieSameSiteLaxMode)
		head = appendHeader(head, []byte("Set-Cookie"), c.Cookie())
		fasthttp.ReleaseCookie(c)
	}
	return append(head, "\r\n"...)
}

func appendHeader(dst, k, v []byte) []byte {
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	dst = append(dst, v...)
	return append(dst, "\r\n"...)
}

// halfCloseLinger is how long a tunnel whose client finished sending
// (EOF) waits for the backend to finish answering.
const halfCloseLinger = 5 * time.Second

// tunnel is one upgraded connection: the client's (hijacked) and the
// backend's. Safe for concurrent use.
type tunnel struct {
	p       *Proxy
	backend net.Conn
	br      *bufio.Reader // the backend's bytes, starting with any sent after the 101
	head    []byte
	idle    time.Duration
	entry   *accesslog.Entry // nil when access logging is off
	last    atomic.Int64     // unix ns of the last byte either way

	mu       sync.Mutex
	client   net.Conn
	closed   bool
	downDone chan struct{}
}

// attach records the client connection; false when the tunnel was closed
// (by the drain) before the hijack handler ran.
func (t *tunnel) attach(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.client = c
	return !t.closed
}

// close closes the backend's connection and ends the client's: fasthttp
// closes a hijacked connection itself once serve returns (its Close does
// nothing before), so a deadline in the past wakes the pump reading it.
func (t *tunnel) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.backend.Close()
	if t.client != nil {
		_ = t.client.SetDeadline(time.Unix(1, 0))
	}
}

// serve is the hijack handler: it sends the 101 and pumps bytes both ways.
func (t *tunnel) serve(c net.Conn) {
	defer func() {
		if rec := recover(); rec != nil {
			t.p.metrics.Panics.Inc()
			t.p.log.Error("panic in an upgraded connection: this is a bug in veer; the connection was closed", "panic", rec)
		}
		t.close()
		t.p.up.remove(t)
	}()
	if !t.attach(c) {
		return
	}
	t.last.Store(time.Now().UnixNano())
	_ = c.SetWriteDeadline(time.Now().Add(t.idle))
	if _, err := c.Write(t.head); err != nil {
		return
	}
	up := make(chan struct{})
	go func() {
		defer close(up)
		_, err := t.pipe(t.backend, c, c)
		if err == nil || errors.Is(err, io.EOF) {
			// The client finished sending: tell the backend, and give
			// it a moment to finish answering.
			if cw, ok := t.backend.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
				timer := time.AfterFunc(halfCloseLinger, t.close)
				defer timer.Stop()
				<-t.waitDown()
				return
			}
		}
		t.close()
	}()
	down, _ := t.pipe(c, t.br, t.backend)
	t.markDown()
	t.close()
	<-up
	if e := t.entry; e != nil {
		e.Bytes = down
		e.Duration = time.Since(e.Time)
		t.p.AccessLog.Log(e)
	}
}

// downDone is closed when the backend-to-client pump ends.
func (t *tunnel) waitDown() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.downDone == nil {
		t.downDone = make(chan struct{})
	}
	return t.downDone
}

func (t *tunnel) markDown() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.downDone == nil {
		t.downDone = make(chan struct{})
	}
	close(t.downDone)
}

var tunnelBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies src to dst until src ends or fails, or nothing has moved
// either way for t.idle. srcConn is src's connection (for its deadline).
func (t *tunnel) pipe(dst net.Conn, src io.Reader, srcConn net.Conn) (int64, error) {
	bp := tunnelBufs.Get().(*[]byte)
	defer tunnelBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		_ = srcConn.SetReadDeadline(time.Now().Add(t.idle))
		// close() marks the tunnel closed before it moves the deadline into
		// the past: checking after setting ours means a close racing this
		// line either is seen here or wakes the Read below.
		if t.isClosed() {
			return n, net.ErrClosed
		}
		k, rerr := src.Read(buf)
		if k > 0 {
			now := time.Now()
			t.last.Store(now.UnixNano())
			_ = dst.SetWriteDeadline(now.Add(t.idle))
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) && !t.isClosed() &&
				time.Since(time.Unix(0, t.last.Load())) < t.idle {
				continue // this way is quiet, the other is not
			}
			return n, rerr
		}
	}
}

func (t *tunnel) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}
