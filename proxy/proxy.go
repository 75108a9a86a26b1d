// Package proxy is veer's fasthttp request handler: it picks the route,
// version and backend from the current routing table, rewrites headers,
// forwards the request, retries what is safe to retry, maps upstream
// failures to 502/503/504 and records every attempt in its version's
// window and metrics.
package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/accesslog"
	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
	"github.com/veer-proxy/veer/sock"
	"github.com/veer-proxy/veer/upstream"
)

// Proxy serves requests from the routing table it holds. Safe for
// concurrent use; the table is swapped atomically with Store.
type Proxy struct {
	table   atomic.Pointer[router.Table]
	log     *slog.Logger
	metrics *metrics.Metrics

	// Now is the clock; tests replace it. Defaults to time.Now.
	Now func() time.Time
	// OnEject is called (off the request path's critical section, but on its
	// goroutine) when passive ejection takes a backend out.
	OnEject func(b *router.Backend, until time.Time)
	// AccessLog, when set (before serving), gets a line per request; nil
	// turns access logging off at the cost of a nil check.
	AccessLog *accesslog.Logger

	up upgrades // open WebSocket/Upgrade tunnels (upgrade.go)

	mirror   *mirrorer
	idPrefix [8]byte
	idSeq    atomic.Uint64
	inflight atomic.Int64
	retrying atomic.Int64

	// Safety (issue 5): the limits NewServer was given, and the per-client
	// rate limiter of the current rate_limit (limits.go, ratelimit.go).
	limits    config.Limits
	limiter   atomic.Pointer[rateLimiter]
	limiterMu sync.Mutex
}

// New returns a proxy serving t.
func New(t *router.Table, m *metrics.Metrics, log *slog.Logger) *Proxy {
	p := &Proxy{log: log, metrics: m, Now: time.Now, mirror: newMirrorer(m), limits: limitsOrDefault(config.Limits{})}
	var seed [4]byte
	_, _ = rand.Read(seed[:])
	hex.Encode(p.idPrefix[:], seed[:])
	p.table.Store(t)
	return p
}

// Store publishes a new routing table; requests already running finish on
// the table they started with.
func (p *Proxy) Store(t *router.Table) { p.table.Store(t) }

// Table returns the current routing table (nil before the first Store
// when New was given none).
func (p *Proxy) Table() *router.Table { return p.table.Load() }

var (
	hdrVersion  = []byte("X-Veer-Version")
	hdrXFF      = []byte("X-Forwarded-For")
	hdrXFP      = []byte("X-Forwarded-Proto")
	hdrXFH      = []byte("X-Forwarded-Host")
	hdrReqID    = []byte("X-Request-Id")
	hdrConn     = []byte("Connection")
	strHTTP     = []byte("http")
	strHTTPS    = []byte("https")
	retryAfter5 = []byte("5")
	retryAfter1 = []byte("1")
)

// hopByHop are removed in both directions (RFC 9110 7.6.1), with every
// header named in Connection.
var (
	hdrKeepAlive  = []byte("Keep-Alive")
	hdrProxyConn  = []byte("Proxy-Connection")
	hdrProxyAuthn = []byte("Proxy-Authenticate")
	hdrProxyAuthz = []byte("Proxy-Authorization")
	hdrTE         = []byte("Te")
	hdrTrailer    = []byte("Trailer")
	hopByHop      = [][]byte{hdrKeepAlive, hdrProxyConn, hdrProxyAuthn, hdrProxyAuthz, hdrTE, hdrTrailer, hdrUpgrade}
)

// Handler is the fasthttp.RequestHandler.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) {
	defer p.recoverPanic(ctx)
	if p.AccessLog != nil {
		ctx.Time() // the entry's time is the request's start (LazyRequestTime)
	}
	t := p.table.Load()
	if t == nil { // New(nil, ...) until the first Store
		ctx.Error("veer: starting, no routing table yet\n", fasthttp.StatusServiceUnavailable)
		ctx.Response.Header.SetBytesV("Retry-After", retryAfter1)
		return
	}
	has, ok := p.admit(ctx, t) // strict framing, limits, rate limit: framing.go, limits.go
	if !ok {
		return
	}
	req := &ctx.Request
	host, path := req.Header.Host(), req.Header.RequestURI()
	if len(path) == 0 || path[0] != '/' { // absolute-form: its authority is the host (RFC 9112 3.2.2)
		u := req.URI()
		host, path = u.Host(), u.PathOriginal()
		req.Header.SetHostBytes(host)
		// The authority's userinfo is the client's business with that
		// host: fasthttp would send it upstream as Authorization.
		u.SetUsernameBytes(nil)
		u.SetPasswordBytes(nil)
	}
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	r := t.Match(host, path)
	if r == nil {
		ctx.Error("veer: no route for this host and path\n", fasthttp.StatusNotFound)
		if p.AccessLog != nil {
			p.logAccess(ctx, nil, nil, nil)
		}
		return
	}
	start := p.Now()
	now := start.UnixNano()
	v, how := r.PickVersion(req, now)
	// Pin a browser to what the weights or its sticky header chose, never
	// to a fallback: a canary without a healthy backend for a moment must
	// not move its users to stable for good.
	pin := how == router.ByWeight || how == router.ByHeader
	b := v.PickBackend(now)
	if b == nil && v != r.Stable {
		// A version without a healthy backend hands its requests to stable,
		// and the failure counts against it so a dead canary is rolled back.
		v.Metrics.Failures[metrics.FailNoBackend].Inc()
		v.Window.Record(start, 0, true)
		v, pin = r.Stable, false
		b = v.PickBackend(now)
	}
	if b == nil {
		v.Metrics.Failures[metrics.FailNoBackend].Inc()
		v.Window.Record(start, 0, true)
		// ctx.Error resets the response: the headers come after it.
		ctx.Error("veer: no healthy backend for this route\n", fasthttp.StatusServiceUnavailable)
		ctx.Response.Header.SetBytesV("Retry-After", retryAfter5)
		ctx.Response.Header.SetBytesKV(hdrVersion, v.NameBytes())
		p.count(v, fasthttp.StatusServiceUnavailable, start)
		if p.AccessLog != nil {
			p.logAccess(ctx, r, v, nil)
		}
		return
	}

	if isUpgrade(req) { // WebSocket and other upgrades: upgrade.go
		p.upgrade(ctx, t, r, v, b, start, pin, has)
		return
	}

	body, rej := p.prepareBody(ctx) // read a small body whole, stream a large one: limits.go
	if rej != nil {
		p.reject(ctx, rej)
		return
	}
	if body != nil {
		defer releaseBody(body)
	}

	clientClose := req.Header.ConnectionClose()
	p.prepareRequest(ctx, t, has)
	if r.MirrorNow() {
		p.mirror.offer(ctx, r)
	}
	status, served, b, end := p.forward(ctx, r, v, b, start, body)
	if served != v { // failed over to stable
		v, pin = served, false
	}

	resp := &ctx.Response
	rhas := scanResponse(&resp.Header)
	if rhas&hasHop != 0 {
		removeResponseHopByHop(&resp.Header)
	}
	resp.Header.ResetConnectionClose()
	if clientClose || body.failed() { // a broken body leaves the connection out of step
		resp.SetConnectionClose()
	}
	if rhas&hasVersion != 0 {
		resp.Header.DelBytes(hdrVersion) // an upstream's own, possibly repeated
	}
	resp.Header.SetCanonical(hdrVersion, v.NameBytes())
	if name := r.Config.Sticky.Cookie; name != "" && pin {
		setStickyCookie(resp, name, v.Name)
	}
	p.countTook(v, status, end.Sub(start))
	if p.AccessLog != nil {
		p.logAccess(ctx, r, v, b)
	}
	if (body == nil || body.whole) && !resp.IsBodyStream() && !resp.ConnectionClose() {
		// A whole answer to a request read whole: it goes out with the wait
		// for the next request (sock.ServerConn).
		if sc, ok := ctx.Conn().(*sock.ServerConn); ok {
			sc.Hold()
		}
	}
}

// setScheme makes req's scheme the backend's, whatever the client sent:
// fasthttp's HostClient refuses a request whose URI scheme is not its own
// (ErrHostClientRedirectToDifferentScheme).
func setScheme(req *fasthttp.Request, b *router.Backend) {
	if b.Client.IsTLS {
		req.URI().SetSchemeBytes(strHTTPS)
	} else {
		req.URI().SetSchemeBytes(strHTTP)
	}
}

// count records an answered request in its version's metrics: status, and
// the time from start until now.
func (p *Proxy) count(v *router.Version, status int, start time.Time) {
	p.countTook(v, status, p.Now().Sub(start))
}

// countTook is count with the time taken already known.
func (p *Proxy) countTook(v *router.Version, status int, took time.Duration) {
	v.Metrics.Request(status)
	v.Metrics.Duration.Observe(took.Seconds())
}

// forward sends the request to b, retrying refused or reset connections of
// idempotent requests on another backend of v, and handing the request to
// the stable version when v's backends refuse connections; it writes the
// answer (or veer's error answer) into ctx.Response. It returns the status
// sent, the version and backend that served it (the last one tried), and
// when the answer (or the failure) came.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, r *router.Route, v *router.Version, b *router.Backend, start time.Time, body *clientBody) (int, *router.Version, *router.Backend, time.Time) {
	p.inflight.Add(1)
	retried := false
	defer func() {
		p.inflight.Add(-1)
		if retried {
			p.retrying.Add(-1)
		}
	}()
	attempts := *r.Config.Retries.Attempts
	streamed := ctx.Request.IsBodyStream() // before Do closes the stream
	failedOver := false
	noHost := len(ctx.Request.Header.Host()) == 0 // HTTP/1.0 may leave it out; HTTP/1.1 upstream may not
	tryStart := start
	for try := 0; ; try++ {
		setScheme(&ctx.Request, b)
		if noHost { // as nginx sends its $proxy_host
			ctx.Request.URI().SetHost(b.Addr)
			ctx.Request.Header.SetHost(b.Addr)
		}
		err := b.Client.Do(&ctx.Request, &ctx.Response)
		end := p.Now()
		if body != nil && body.err != nil {
			// The client's body failed (too large, too slow, malformed):
			// not the backend's doing, so not recorded against it.
			rej := bodyRejection(body.err, err)
			ctx.Error(rej.text, rej.status)
			ctx.SetConnectionClose()
			return rej.status, v, b, end
		}
		if err == nil {
			code := ctx.Response.StatusCode()
			if s, ok := ctx.Response.BodyStream().(upstream.Stream); ok {
				// Recorded when the body has streamed to its end: limits.go.
				s.Observe(p.watch(ctx, r, v, b, code, end.Sub(tryStart)))
				return code, v, b, end
			}
			failed := code >= 500
			v.Window.Record(end, end.Sub(tryStart), failed)
			p.outlier(r, v, b, failed, end)
			return code, v, b, end
		}
		status, reason := Classify(err)
		v.Metrics.Failures[reason].Inc()
		v.Window.Record(end, end.Sub(tryStart), true)
		p.outlier(r, v, b, true, end)
		next := (*router.Backend)(nil)
		if try < attempts && retryable(ctx, reason, err, streamed) && (retried || p.retryBudget()) {
			next = v.PickOther(end.UnixNano(), b)
		}
		if next == nil && reason == metrics.FailConnect && v != r.Stable && !failedOver && (retried || p.retryBudget()) {
			// Nothing of the request reached v's backends: like a version
			// without a healthy backend, v hands it to stable, and the
			// failure above counts against v, so a dead canary is rolled back.
			if next = r.Stable.PickBackend(end.UnixNano()); next != nil {
				v, failedOver = r.Stable, true
			}
		}
		if next != nil {
			if !retried { // in flight as a retry until the request is done
				p.retrying.Add(1)
				retried = true
			}
			b, tryStart = next, end
			ctx.Response.Reset()
			continue
		}
		// ctx.Error resets the response: the headers come after it.
		ctx.Error(failureText[status], status)
		if status == fasthttp.StatusServiceUnavailable {
			ctx.Response.Header.SetBytesV("Retry-After", retryAfter5)
		}
		if p.log.Enabled(context.Background(), slog.LevelDebug) {
			p.log.Debug("upstream failed", "route", r.Name, "version", v.Name, "backend", b.Addr, "err", err)
		}
		return status, v, b, end
	}
}

var failureText = map[int]string{
	fasthttp.StatusBadGateway:         "veer: upstream connection failed\n",
	fasthttp.StatusServiceUnavailable: "veer: upstream has no free connection\n",
	fasthttp.StatusGatewayTimeout:     "veer: upstream timed out\n",
}

// retryBudget allows a retry while retries in flight stay within 20% of the
// requests in flight (at least 3), like Envoy's retry budgets, so that
// retries cannot multiply the load of an upstream that is already failing.
func (p *Proxy) retryBudget() bool {
	limit := p.inflight.Load() / 5
	if limit < 3 {
		limit = 3
	}
	return p.retrying.Load() < limit
}

// retryable: only idempotent methods, only for a refused connection
// (nothing sent) or one closed or reset before any response byte
// (nothing has reached the client: veer answers only after the
// upstream has), and never once a streamed body has been sent.
func retryable(ctx *fasthttp.RequestCtx, reason int, err error, streamed bool) bool {
	switch {
	case reason == metrics.FailConnect: // the body stream, if any, is untouched
	case reason == metrics.FailReset && errors.Is(err, upstream.ErrNoResponse) && !streamed:
	default:
		return false
	}
	switch string(ctx.Method()) {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE":
		return true
	}
	return false
}

// outlier feeds passive ejection: consecutive 5xx or connection failures
// eject the backend, never more than max_ejection_percent of the version's
// backends and never the last available one.
func (p *Proxy) outlier(r *router.Route, v *router.Version, b *router.Backend, failed bool, now time.Time) {
	if !failed {
		b.State.Success()
		return
	}
	o := r.Config.Outlier
	if !b.State.Failure(*o.Consecutive5xx) {
		return
	}
	ns := now.UnixNano()
	total, out := len(v.Backends), 0
	for _, x := range v.Backends {
		if !x.State.Available(ns) {
			out++
		}
	}
	if out+1 >= total || (out+1)*10000 > total*int(*o.MaxEjectionPercent) {
		return
	}
	until := b.State.Eject(ns, o.EjectionTime.D())
	if p.OnEject != nil {
		p.OnEject(b, time.Unix(0, until))
	}
}

// Classify maps an upstream error to veer's status and failure reason: a
// refused or unreachable upstream is 502 (connect), a reset or closed
// connection 502 (reset), a timeout 504, no free connection 503.
func Classify(err error) (status, reason int) {
	var op *net.OpError
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return fasthttp.StatusServiceUnavailable, metrics.FailConnect
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return fasthttp.StatusGatewayTimeout, metrics.FailConnect
	case errors.As(err, &op) && op.Op == "dial":
		if op.Timeout() {
			return fasthttp.StatusGatewayTimeout, metrics.FailConnect
		}
		return fasthttp.StatusBadGateway, metrics.FailConnect
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded):
		return fasthttp.StatusGatewayTimeout, metrics.FailTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return fasthttp.StatusBadGateway, metrics.FailConnect
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fasthttp.StatusGatewayTimeout, metrics.FailTimeout
	}
	return fasthttp.StatusBadGateway, metrics.FailReset
}

func (p *Proxy) recoverPanic(ctx *fasthttp.RequestCtx) {
	if rec := recover(); rec != nil {
		p.metrics.Panics.Inc()
		p.log.Error("panic in request handler: this is a bug in veer; the request got a 500", "panic", rec, "uri", string(ctx.RequestURI()))
		ctx.Response.Reset()
		ctx.Error("veer: internal error\n", fasthttp.StatusInternalServerError)
	}
}

// prepareRequest rewrites the request for the upstream: hop-by-hop headers
// out; X-Forwarded-For/-Proto/-Host and X-Request-Id set.
//
// has is what checkRequest found among the header names: most requests
// carry nothing to remove or replace, and each DelBytes would normalise its
// key and scan every header again.
func (p *Proxy) prepareRequest(ctx *fasthttp.RequestCtx, t *router.Table, has int) {
	h := &ctx.Request.Header
	if has&hasHop != 0 {
		removeHopByHop(h)
	}
	h.ResetConnectionClose()

	var buf [128]byte
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	peer = peer.Unmap()
	trusted := false
	for _, pfx := range t.Trusted {
		if pfx.Contains(peer) {
			trusted = true
			break
		}
	}
	// Every line of a header veer sets is replaced: a second
	// X-Forwarded-For line would otherwise carry a client's forgery through.
	xff := buf[:0]
	if trusted && has&hasXFF != 0 {
		for _, prior := range h.PeekAll(fasthttp.HeaderXForwardedFor) { // several lines are one list (RFC 9110 5.3)
			if len(prior) > 0 {
				xff = append(xff, prior...)
				xff = append(xff, ", "...)
			}
		}
	}
	xff = peer.AppendTo(xff)
	if has&hasXFF != 0 {
		h.DelBytes(hdrXFF)
	}
	h.SetCanonical(hdrXFF, xff)
	if !trusted || has&hasXFP == 0 || len(h.PeekBytes(hdrXFP)) == 0 {
		if has&hasXFP != 0 {
			h.DelBytes(hdrXFP)
		}
		if ctx.IsTLS() {
			h.SetCanonical(hdrXFP, strHTTPS)
		} else {
			h.SetCanonical(hdrXFP, strHTTP)
		}
	}
	if !trusted || has&hasXFH == 0 || len(h.PeekBytes(hdrXFH)) == 0 {
		if has&hasXFH != 0 {
			h.DelBytes(hdrXFH)
		}
		h.SetCanonical(hdrXFH, h.Host())
	}
	if has&hasReqID == 0 || len(h.PeekBytes(hdrReqID)) == 0 {
		id := append(buf[:0], p.idPrefix[:]...)
		id = appendHex(id, p.idSeq.Add(1))
		h.SetCanonical(hdrReqID, id)
	}
}

// What checkRequest and scanResponse found among the header names.
const (
	hasHop     = 1 << iota // Connection or a hop-by-hop header
	hasXFF                 // X-Forwarded-For
	hasXFP                 // X-Forwarded-Proto
	hasXFH                 // X-Forwarded-Host
	hasReqID               // X-Request-Id
	hasVersion             // X-Veer-Version

	// hasAll is every bit: a request whose head was not read from the wire
	// (built in code) is treated as if it carried everything.
	hasAll = hasHop | hasXFF | hasXFP | hasXFH | hasReqID | hasVersion
)

// namedBits are the header names headerBit knows: Connection and the
// hop-by-hop list, and the headers veer sets itself.
var namedBits = func() []namedBit {
	out := []namedBit{{hdrConn, hasHop}, {hdrXFF, hasXFF}, {hdrXFP, hasXFP}, {hdrXFH, hasXFH},
		{hdrReqID, hasReqID}, {hdrVersion, hasVersion}}
	for _, k := range hopByHop {
		out = append(out, namedBit{k, hasHop})
	}
	return out
}()

type namedBit struct {
	name []byte
	bit  int
}

// headerBit is what a header name is to veer (any case).
func headerBit(k []byte) int {
	for _, n := range namedBits {
		if len(n.name) == len(k) && bytes.EqualFold(n.name, k) {
			return n.bit
		}
	}
	return 0
}

// scanResponse is what a response's header names hold (checkRequest does
// the same for a request).
func scanResponse(h *fasthttp.ResponseHeader) int {
	has := 0
	for k := range h.All() {
		has |= headerBit(k)
	}
	return has
}

func appendHex(dst []byte, n uint64) []byte {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	return append(dst, b[:]...)
}

// removeHopByHop deletes the hop-by-hop headers of a request and every
// header that a Connection line names (RFC 9110 7.6.1). fasthttp frames the
// message itself, so Host, Content-Length and Transfer-Encoding stay even
// when named: they are not the peer's to remove.
//
// It and removeResponseHopByHop are twins rather than one function over an
// interface, because a slice passed to an interface method escapes, and
// the names' buffer would be allocated per request.
func removeHopByHop(h *fasthttp.RequestHeader) {
	var buf [256]byte
	// Copied first: deleting headers moves the bytes PeekAll points into.
	named := appendLines(buf[:0], h.PeekAll(fasthttp.HeaderConnection))
	for len(named) > 0 {
		var tok []byte
		if tok, named = nextToken(named); tok != nil {
			h.DelBytes(tok)
		}
	}
	h.DelBytes(hdrConn)
	for _, k := range hopByHop {
		h.DelBytes(k)
	}
}

// removeResponseHopByHop is removeHopByHop for a response.
func removeResponseHopByHop(h *fasthttp.ResponseHeader) {
	var buf [256]byte
	named := appendLines(buf[:0], h.PeekAll(fasthttp.HeaderConnection))
	for len(named) > 0 {
		var tok []byte
		if tok, named = nextToken(named); tok != nil {
			h.DelBytes(tok)
		}
	}
	h.DelBytes(hdrConn)
	for _, k := range hopByHop {
		h.DelBytes(k)
	}
}

// appendLines appends each line, and a comma, to dst.
func appendLines(dst []byte, lines [][]byte) []byte {
	for _, line := range lines {
		dst = append(dst, line...)
		dst = append(dst, ',')
	}
	return dst
}

// nextToken splits the first comma-separated token off list; tok is nil
// when it is empty or names a framing header.
func nextToken(list []byte) (tok, rest []byte) {
	tok, rest, _ = bytes.Cut(list, comma)
	if tok = bytes.TrimSpace(tok); len(tok) == 0 || framing(tok) {
		return nil, rest
	}
	return tok, rest
}

var comma = []byte(",")

// framing reports whether name is a header fasthttp needs to frame the
// message.
func framing(name []byte) bool {
	return bytes.EqualFold(name, []byte(fasthttp.HeaderHost)) ||
		bytes.EqualFold(name, []byte(fasthttp.HeaderContentLength)) ||
		bytes.EqualFold(name, []byte(fasthttp.HeaderTransferEncoding))
}

func setStickyCookie(resp *fasthttp.Response, name, version string) {
	c := fasthttp.AcquireCookie()
	c.SetKey(name)
	c.SetValue(version)
	c.SetPath("/")
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteLaxMode)
	resp.Header.SetCookie(c)
	fasthttp.ReleaseCookie(c)
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
