package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
	"github.com/veer-proxy/veer/upstream"
)

// Limits, body streaming and the client-side timeouts (issue 5, parts 5
// and 6).
//
// Request bodies stream (fasthttp's Server.StreamRequestBody): a body with
// a Content-Length up to bodyBuffer, and a chunked body that ends within
// it, is read whole before anything is forwarded, so that its framing is
// checked before the backend sees a byte of it and so that the request
// may be retried or mirrored; a larger body is forwarded as it arrives,
// counted against max_body_bytes (413), with the client's read deadline
// pushed forward by client_idle_timeout before each read: an upload may
// take as long as it needs while it makes progress. Response bodies over
// upstream.BufferLimit stream the same way (upstream.Stream), the client's
// write deadline pushed forward by client_idle_timeout before each chunk.

// bodyBuffer is the largest request body read whole before forwarding.
const bodyBuffer = 64 << 10

var errBodyTooLarge = errors.New("proxy: request body larger than limits.max_body_bytes")

// admit applies veer's checks of a request head before it is routed:
// strict framing and the limits (checkRequest), then the per-client rate
// limit. It answers the request itself and returns false when the
// request goes no further; has is checkRequest's.
func (p *Proxy) admit(ctx *fasthttp.RequestCtx, t *router.Table) (has int, ok bool) {
	rej, has := checkRequest(&ctx.Request.Header, &p.limits)
	if rej == nil && p.limits.MaxBodyBytes > 0 && int64(ctx.Request.Header.ContentLength()) > p.limits.MaxBodyBytes {
		rej = &rejectBodyLarge
	}
	if rej == nil {
		if ok, wait := p.rateLimit(ctx, t); !ok {
			ctx.Error("veer: too many requests from this client\n", fasthttp.StatusTooManyRequests)
			ctx.Response.Header.SetBytesV("Retry-After", retryAfterSeconds(wait))
			p.metrics.Rejected(fasthttp.StatusTooManyRequests)
			p.logRejection(ctx)
			return has, false
		}
		return has, true
	}
	p.reject(ctx, rej)
	return has, false
}

// reject answers with rej; the connection is closed after it unless the
// request was well formed.
func (p *Proxy) reject(ctx *fasthttp.RequestCtx, rej *rejection) {
	if rej.text == "" {
		ctx.Response.Reset()
		ctx.SetStatusCode(rej.status)
	} else {
		ctx.Error(rej.text, rej.status)
	}
	if rej.status == fasthttp.StatusMethodNotAllowed {
		ctx.Response.Header.SetBytesV("Allow", allowHeader)
	}
	if !rej.keep {
		ctx.SetConnectionClose()
	}
	p.metrics.Rejected(rej.status)
	p.logRejection(ctx)
}

func (p *Proxy) logRejection(ctx *fasthttp.RequestCtx) {
	if p.AccessLog != nil {
		p.logAccess(ctx, nil, nil, nil)
	}
}

// retryAfterSeconds is d rounded up to whole seconds, at least 1, as the
// digits of a Retry-After value.
func retryAfterSeconds(d time.Duration) []byte {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	if s <= 9 {
		return digits[s : s+1]
	}
	return strconv.AppendInt(nil, s, 10)
}

var digits = []byte("0123456789")

// clientBody is the request body veer forwards: what was read ahead
// (prefix), then the rest of fasthttp's body stream, counted against
// max_body_bytes, with the client connection's read deadline pushed
// forward before each read. It holds the RequestCtx only while the
// handler runs. Pooled; not safe for concurrent use.
type clientBody struct {
	ctx    *fasthttp.RequestCtx
	r      io.Reader
	prefix []byte
	max    int64
	n      int64
	idle   time.Duration
	err    error // the first error other than io.EOF
	// whole: the body was read whole into buf, which the request carries
	// without a copy (SetBodyRaw) until release.
	whole bool
	buf   [bodyBuffer + 1]byte
}

func (b *clientBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.prefix = b.prefix[n:]
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.idle > 0 && b.ctx != nil {
		_ = b.ctx.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.max > 0 && b.n > b.max {
		b.err = errBodyTooLarge
		return n, b.err
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// failed reports whether reading the client's body failed (b may be nil).
func (b *clientBody) failed() bool { return b != nil && b.err != nil }

var bodyPool = sync.Pool{New: func() any { return &clientBody{} }}

func releaseBody(b *clientBody) {
	if b.whole && b.ctx != nil {
		b.ctx.Request.ResetBody() // it points into buf
	}
	b.ctx, b.r, b.prefix, b.err, b.n, b.whole = nil, nil, nil, nil, 0, false
	bodyPool.Put(b)
}

// prepareBody reads a small body whole (the request then carries it as a
// plain body, framed by Content-Length upstream, pointing into the
// clientBody's buffer: a 64 KiB body is not copied once more), or sets
// the request up to stream a larger one through a clientBody. The caller
// releases the returned clientBody (nil when there is no body) once the
// request is forwarded. A rejection is the client's fault: too large,
// too slow, or malformed chunks.
func (p *Proxy) prepareBody(ctx *fasthttp.RequestCtx) (*clientBody, *rejection) {
	req := &ctx.Request
	if len(req.Header.PeekBytes(hdrExpect)) > 0 {
		req.Header.DelBytes(hdrExpect) // answered by veer (expectHandler), not the backend's to answer again
	}
	if !req.IsBodyStream() {
		return nil, nil
	}
	cl := req.Header.ContentLength()
	b := bodyPool.Get().(*clientBody)
	b.ctx, b.r, b.max, b.idle = ctx, req.BodyStream(), p.limits.MaxBodyBytes, p.limits.ClientIdleTimeout.D()
	switch {
	case cl > bodyBuffer:
		req.SetBodyStream(b, cl)
		return b, nil
	case cl >= 0:
		if _, err := io.ReadFull(b, b.buf[:cl]); err != nil {
			defer releaseBody(b)
			return nil, bodyRejection(b.err, err)
		}
		req.SetBodyRaw(b.buf[:cl])
		b.whole = true
		return b, nil
	default: // chunked: whole when it ends within bodyBuffer
		n, err := io.ReadFull(b, b.buf[:])
		switch {
		case err == nil: // longer than bodyBuffer: stream what was read, then the rest
			b.prefix = b.buf[:n]
			req.SetBodyStream(b, -1)
			return b, nil
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			if b.err != nil {
				defer releaseBody(b)
				return nil, bodyRejection(b.err, err)
			}
			req.SetBodyRaw(b.buf[:n]) // Content-Length framing upstream
			req.Header.SetContentLength(n)
			b.whole = true
			return b, nil
		default:
			defer releaseBody(b)
			return nil, bodyRejection(b.err, err)
		}
	}
}

var (
	rejectBodyTimeout = rejection{status: fasthttp.StatusRequestTimeout, text: "veer: the request body stopped arriving\n"}
	rejectBodyBroken  = rejection{status: fasthttp.StatusBadRequest, text: "veer: malformed or incomplete request body\n"}
)

// bodyRejection maps a failure to read the client's body to veer's answer.
func bodyRejection(bodyErr, err error) *rejection {
	if bodyErr != nil {
		err = bodyErr
	}
	switch {
	case errors.Is(err, errBodyTooLarge), errors.Is(err, fasthttp.ErrBodyTooLarge):
		return &rejectBodyLarge
	case isTimeout(err):
		return &rejectBodyTimeout
	}
	return &rejectBodyBroken
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// bodyWatch follows a streamed response body (upstream.Observer): it
// pushes the client's write deadline forward before each chunk, and when
// the body ends records the attempt in its version's window, as a failure
// when the backend broke off, and feeds passive ejection. It keeps the
// client's net.Conn, never the RequestCtx: fasthttp closes the body, and
// with it this watch, before it reuses or closes the connection. Pooled.
type bodyWatch struct {
	p       *Proxy
	r       *router.Route
	v       *router.Version
	b       *router.Backend
	status  int
	latency time.Duration // to the response head: what the window's percentiles compare
	conn    net.Conn
	idle    time.Duration
}

var watchPool = sync.Pool{New: func() any { return &bodyWatch{} }}

func (p *Proxy) watch(ctx *fasthttp.RequestCtx, r *router.Route, v *router.Version, b *router.Backend, status int, latency time.Duration) *bodyWatch {
	w := watchPool.Get().(*bodyWatch)
	*w = bodyWatch{p: p, r: r, v: v, b: b, status: status, latency: latency, conn: ctx.Conn(), idle: p.limits.ClientIdleTimeout.D()}
	return w
}

func (w *bodyWatch) BodyRead() {
	if w.idle > 0 && w.conn != nil {
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.idle))
	}
}

func (w *bodyWatch) BodyDone(_ int64, err error) {
	defer func() {
		if rec := recover(); rec != nil { // runs on fasthttp's goroutine, after the handler's recover
			w.p.metrics.Panics.Inc()
			w.p.log.Error("panic after a streamed response: this is a bug in veer", "panic", rec)
		}
		*w = bodyWatch{}
		watchPool.Put(w)
	}()
	now := w.p.Now()
	failed := w.status >= 500 || err != nil
	if err != nil {
		_, reason := Classify(err)
		if reason == metrics.FailConnect {
			reason = metrics.FailReset
		}
		w.v.Metrics.Failures[reason].Inc()
	}
	w.v.Window.Record(now, w.latency, failed)
	w.p.outlier(w.r, w.v, w.b, failed, now)
}

var _ upstream.Observer = (*bodyWatch)(nil)

// errorHandler answers what fasthttp could not parse, before Handler: a
// head over the read buffer (431, or 414 when the request line alone fills
// it), a head that did not arrive within header_read_timeout (408, the
// slowloris guard), and every malformed request (400). The connection is
// closed after it.
func (p *Proxy) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	defer func() { p.metrics.Rejected(ctx.Response.StatusCode()) }()
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		if requestLineTooLong(err) {
			ctx.Error(rejectURILong.text, rejectURILong.status)
		} else {
			ctx.Error(rejectHeadLarge.text, rejectHeadLarge.status)
		}
	case isTimeout(err):
		ctx.Error("veer: the request head did not arrive in time\n", fasthttp.StatusRequestTimeout)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error(rejectBodyLarge.text, rejectBodyLarge.status)
	default:
		ctx.Error("veer: malformed request\n", fasthttp.StatusBadRequest)
	}
}

// requestLineTooLong reports whether the head that overflowed the read
// buffer has no line end in its first bytes, i.e. whether its request line
// is what is too long. fasthttp does not say which part overflowed, only
// quotes the start of the buffer in its error ("contents: "..."), so this
// reads that quote; without one it answers false (431).
func requestLineTooLong(err error) bool {
	msg := err.Error()
	i := strings.Index(msg, "contents: ")
	if i < 0 {
		return false
	}
	q, qerr := strconv.QuotedPrefix(msg[i+len("contents: "):])
	if qerr != nil {
		return false
	}
	start, qerr := strconv.Unquote(q)
	if qerr != nil {
		return false
	}
	return !strings.Contains(start, "\n")
}

// expectHandler answers "Expect: 100-continue" before the body is read:
// a request veer would reject gets its status instead of 100 Continue.
func (p *Proxy) expectHandler(ctx *fasthttp.RequestCtx) int {
	rej, _ := checkRequest(&ctx.Request.Header, &p.limits)
	if rej == nil && p.limits.MaxBodyBytes > 0 && int64(ctx.Request.Header.ContentLength()) > p.limits.MaxBodyBytes {
		rej = &rejectBodyLarge
	}
	if rej != nil && rej != &answerOptions {
		return rej.status
	}
	return fasthttp.StatusContinue
}

// headerReceived runs when a request head has been parsed, before fasthttp
// reads ahead up to 8 KiB of its body: a body veer will refuse as too
// large is not waited for.
func (p *Proxy) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if max := p.limits.MaxBodyBytes; max > 0 && int64(h.ContentLength()) > max {
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	}
	return fasthttp.RequestConfig{}
}

// limitsOrDefault fills the zero fields of l (a Proxy made without
// NewServer) with config's defaults.
func limitsOrDefault(l config.Limits) config.Limits {
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	if l.MaxURIBytes == 0 {
		l.MaxURIBytes = 8 << 10
	}
	return l
}
