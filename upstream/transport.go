// Package upstream is veer's side of the HTTP/1.1 exchange with a backend:
// a fasthttp.RoundTripper that every backend's HostClient uses in place of
// fasthttp's own transport.
//
// It exists for what fasthttp's transport cannot do:
//
//   - A response-header timeout that is only that. fasthttp's ReadTimeout
//     is one deadline for the whole response, so it would cut a long
//     download; here the deadline covers the wait for the response head,
//     and after it every read of the body, and every write of the request,
//     only has to make progress within the same time (nginx's
//     proxy_read_timeout and proxy_send_timeout work this way).
//   - Streaming without allocating. A response with a body of known length
//     up to BufferLimit is read whole, as before; larger and chunked ones
//     are streamed to the client through a pooled Stream, so a 1 GiB
//     download costs a few buffers, not a gigabyte.
//   - Strict response framing. The response head is checked byte by byte
//     (CheckResponseHead) before fasthttp parses it: ambiguous framing is
//     ErrMalformedResponse (veer answers 502) and the connection is closed,
//     as is a connection on which the backend sent more than its response.
//   - Telling a failure before any response byte (ErrNoResponse, which a
//     retry may repeat elsewhere) from one after.
package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/sock"
)

// Sentinel errors. Both wrap the error underneath.
var (
	// ErrNoResponse: the exchange failed before the backend sent a byte of
	// its response (refused, reset or closed connection). Nothing of the
	// response reached anyone, so an idempotent request may be retried.
	ErrNoResponse = errors.New("upstream: no response")
	// ErrMalformedResponse: the backend's response is not unambiguous
	// HTTP/1.1. The connection is closed, never reused.
	ErrMalformedResponse = errors.New("upstream: malformed response")
)

// BufferLimit is the largest response body read whole; larger bodies, and
// bodies of unknown length, are streamed.
const BufferLimit = 64 << 10

// maxInterim bounds the 1xx responses skipped before the final one.
const maxInterim = 8

// ioBufferSize is the size of the read and write buffers of an exchange.
const ioBufferSize = 16 << 10

// Transport is the RoundTripper of a backend's HostClient. Safe for
// concurrent use; its fields must not change once it is in use.
type Transport struct {
	// ResponseHeader bounds the wait for the response head once the
	// request is sent, and each step of the rest of the exchange: a write
	// of the request or a read of a streamed body that makes no progress
	// for this long fails. 0 means no limit.
	ResponseHeader time.Duration
}

// conn is what veer needs of fasthttp's pooled connection, whose type is
// not exported: the functions below are generic over it, and close or
// pool it through HostClient's method expressions.
type conn interface {
	Conn() net.Conn
	LastUseTime() time.Time
}

// RoundTrip implements fasthttp.RoundTripper. It never asks fasthttp to
// retry (veer retries itself, on another backend, when it is safe): the
// one attempt it repeats itself is a request that met a pooled keep-alive
// connection the backend had closed, before any response byte, and that
// may be sent again (idempotent, body not streamed), as net/http does.
func (t *Transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	skip := resp.SkipBody    // the caller wants no body (a mirror)
	again := replayable(req) // before the write closes a body stream
	for attempt := 0; ; attempt++ {
		cc, err := hc.AcquireConn(0, req.ConnectionClose())
		if err != nil {
			return false, err
		}
		reused := !cc.LastUseTime().IsZero()
		err = exchange(t, hc, cc, req, resp, skip, (*fasthttp.HostClient).CloseConn, (*fasthttp.HostClient).ReleaseConn)
		if err != nil && attempt == 0 && reused && errors.Is(err, ErrNoResponse) && again {
			resp.Reset()
			continue
		}
		return false, err
	}
}

// replayable reports whether req may be sent again after a stale
// keep-alive connection failed it.
func replayable(req *fasthttp.Request) bool {
	if req.IsBodyStream() {
		return false
	}
	switch string(req.Header.Method()) {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE":
		return true
	}
	return false
}

// exchange sends req on cc and reads the response head, and the body
// when it is small; a larger body is left streaming, and owns cc until
// it is closed.
func exchange[C conn](t *Transport, hc *fasthttp.HostClient, cc C, req *fasthttp.Request, resp *fasthttp.Response,
	skip bool, closeConn, releaseConn func(*fasthttp.HostClient, C),
) error {
	// A request whose body streams pushes the write deadline forward
	// before each write, and starts the wait for the head once it is sent.
	// Any other request is written from memory at once: one deadline
	// covers its write and the wait for the head, and on veer's own
	// connections it is kept within a slack of what is asked, so that
	// most exchanges change no timer at all.
	streamed := req.IsBodyStream()
	x := acquireIO(cc.Conn(), t.ResponseHeader, streamed)
	fail := func(err error) error {
		releaseIO(x)
		closeConn(hc, cc)
		return err
	}
	if !streamed {
		if sc, ok := x.c.(*sock.Conn); ok {
			// Exchanges follow one another on a pooled connection: its
			// timers change once per slack, not once per request.
			_ = sc.KeepDeadline(deadline(t.ResponseHeader), deadlineSlack(t.ResponseHeader))
		} else {
			_ = x.c.SetDeadline(deadline(t.ResponseHeader))
		}
	}

	resp.ParseNetConn(x.c)
	// A body larger than bw's room goes past bw in a write of its own
	// (bufio's large write from an empty buffer): that last piece, a slice
	// of the request itself, waits for the first read too.
	x.holdDirect = !streamed
	err := req.Write(x.bw)
	x.holdDirect = false
	if err == nil {
		// The last piece of a request written from memory waits for the
		// first read, which sends it and waits for the answer in one go
		// (sock.Conn.SendThenRead).
		x.hold = !streamed
		err = x.bw.Flush()
		x.hold = false
	}
	if err != nil {
		if isTimeout(err) {
			return fail(err)
		}
		if isConnGone(err) {
			return fail(fmt.Errorf("%w: %w", ErrNoResponse, err))
		}
		return fail(err)
	}

	if streamed {
		_ = x.c.SetReadDeadline(deadline(t.ResponseHeader))
	}
	for interim := 0; ; interim++ {
		head, err := peekHead(x.br)
		if err != nil {
			if !x.gotByte && (err == io.EOF || isConnGone(err)) {
				return fail(fmt.Errorf("%w: %w", ErrNoResponse, err))
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return fail(fmt.Errorf("%w: response head larger than %d bytes", ErrMalformedResponse, ioBufferSize))
			}
			return fail(err)
		}
		if err := CheckResponseHead(head); err != nil {
			return fail(fmt.Errorf("%w: %w", ErrMalformedResponse, err))
		}
		if err := resp.Header.Read(x.br); err != nil {
			return fail(fmt.Errorf("%w: %w", ErrMalformedResponse, err))
		}
		code := resp.StatusCode()
		if code >= 200 || code == fasthttp.StatusSwitchingProtocols {
			break
		}
		if interim >= maxInterim {
			return fail(fmt.Errorf("%w: more than %d interim responses", ErrMalformedResponse, maxInterim))
		}
	}

	code := resp.StatusCode()
	if code == fasthttp.StatusSwitchingProtocols {
		// The connection now speaks another protocol: it is never pooled.
		resp.SkipBody = true
		releaseIO(x)
		closeConn(hc, cc)
		return nil
	}
	cl := resp.Header.ContentLength()
	x.streaming = true // from here on, each read only has to make progress
	switch {
	case req.Header.IsHead() || code < 200 || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified:
		resp.SkipBody = true // no body on the wire
	case skip && (cl < 0 || cl > BufferLimit):
		// A body the caller does not want, too long to read and drop: the
		// connection goes with it.
		releaseIO(x)
		closeConn(hc, cc)
		return nil
	case cl >= 0 && cl <= BufferLimit:
		if err := resp.ReadBody(x.br, BufferLimit); err != nil {
			return fail(bodyError(err))
		}
		if skip {
			resp.ResetBody()
		}
	case cl > BufferLimit:
		openStream(x, hc, cc, req, resp, closeConn, releaseConn)
		return nil
	default:
		// Chunked, or to the end of the connection: read up to BufferLimit
		// ahead, so that a body that ends within it is checked whole (a
		// broken chunk is a 502, not a cut-off 200) and its connection
		// freed at once; a longer one streams on from where it got.
		return readAhead(x, hc, cc, req, resp, closeConn, releaseConn)
	}
	// The backend sent more than its response announced: the connection
	// is out of step with it and must not carry another request.
	discard := x.br.Buffered() > 0 || resp.ConnectionClose() || req.ConnectionClose()
	releaseIO(x)
	if discard {
		closeConn(hc, cc)
	} else {
		releaseConn(hc, cc)
	}
	return nil
}

// deadline is d from now, or none when d is 0 (no limit).
func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// deadlineSlack is how late the response-header timeout d may fire on a
// pooled connection (sock.Conn.KeepDeadline): a sixteenth of it, at most
// a second.
func deadlineSlack(d time.Duration) time.Duration {
	return min(d/16, time.Second)
}

// peekHead returns the response head at the start of br, up to and
// including its empty line, without consuming it.
func peekHead(br *bufio.Reader) ([]byte, error) {
	from := 0
	for {
		if k := br.Buffered(); k > 0 {
			b, _ := br.Peek(k)
			if i := indexHeadEnd(b, from); i >= 0 {
				return b[:i], nil
			}
			if k >= br.Size() {
				return nil, bufio.ErrBufferFull
			}
			from = max(0, k-3)
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil { // waits for one more byte
			return nil, err
		}
	}
}

// indexHeadEnd returns the length of the head in b, through its empty
// line, or -1; looking from from on. A head that ends in bare LFs is
// found too, so that CheckResponseHead refuses it at once instead of
// waiting for a CRLF CRLF that never comes.
func indexHeadEnd(b []byte, from int) int {
	for i := max(from, 1); i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if b[i-1] == '\n' || (i >= 2 && b[i-1] == '\r' && b[i-2] == '\n') {
			return i + 1
		}
	}
	return -1
}

// bodyError marks a response body that broke its own framing as
// malformed; a timeout or a closed connection stays what it is.
func bodyError(err error) error {
	if isTimeout(err) || isConnGone(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrMalformedResponse, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// isConnGone reports a connection the backend closed or reset.
func isConnGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// connIO is the buffered reader and writer of one exchange. Writes of a
// streamed request body, and reads once the response body streams, push
// the connection's deadline forward by progress before each system call.
// Not safe for concurrent use.
type connIO struct {
	c         net.Conn
	progress  time.Duration
	writes    bool // request writes: a deadline per write
	streaming bool // body reads: a deadline per read
	gotByte   bool // a byte of the response arrived
	hold      bool // keep the next write for the first read (sock.Conn.SendThenRead)
	// holdDirect keeps a write that bypasses bw's buffer (a slice of the
	// request, valid for the whole exchange) for the first read; a flush
	// of bw's buffer is never kept then, as bw may fill it again.
	holdDirect bool
	held       []byte
	br         *bufio.Reader
	bw         *bufio.Writer
	bwBuf      *byte // the start of bw's buffer, which its flushes write from
}

func (x *connIO) Read(p []byte) (int, error) {
	if x.streaming && x.progress > 0 {
		_ = x.c.SetReadDeadline(time.Now().Add(x.progress))
	}
	var n int
	var err error
	if out := x.held; out != nil {
		// bw's buffer, untouched until the exchange ends as nothing is
		// written after its last flush, or a slice of the request.
		x.held = nil
		n, err = x.c.(*sock.Conn).SendThenRead(out, p)
	} else {
		n, err = x.c.Read(p)
	}
	if n > 0 {
		x.gotByte = true
	}
	return n, err
}

func (x *connIO) Write(p []byte) (int, error) {
	if (x.hold || x.holdDirect) && len(p) > 0 {
		if _, ok := x.c.(*sock.Conn); ok {
			if out := x.held; out != nil { // an earlier piece goes first
				x.held = nil
				if _, err := x.c.Write(out); err != nil {
					return 0, err
				}
			}
			if x.hold || unsafe.SliceData(p) != x.bwBuf {
				x.held = p
				return len(p), nil
			}
		}
	}
	if x.writes && x.progress > 0 {
		_ = x.c.SetWriteDeadline(time.Now().Add(x.progress))
	}
	return x.c.Write(p)
}

var ioPool sync.Pool

func acquireIO(c net.Conn, progress time.Duration, writes bool) *connIO {
	x, _ := ioPool.Get().(*connIO)
	if x == nil {
		x = &connIO{}
		x.br = bufio.NewReaderSize(x, ioBufferSize)
		x.bw = bufio.NewWriterSize(x, ioBufferSize)
		x.bwBuf = unsafe.SliceData(x.bw.AvailableBuffer()) // empty: its whole buffer; Reset keeps it
	}
	x.c, x.progress, x.writes = c, progress, writes
	x.br.Reset(x)
	x.bw.Reset(x)
	return x
}

func releaseIO(x *connIO) {
	x.c, x.held = nil, nil
	x.streaming, x.gotByte, x.hold, x.holdDirect = false, false, false, false
	x.br.Reset(x)
	x.bw.Reset(x)
	ioPool.Put(x)
}
