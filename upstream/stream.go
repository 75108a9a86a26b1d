package upstream

import (
	"io"
	"sync"

	"github.com/valyala/fasthttp"
)

// Stream is a response body streamed from a backend: the BodyStream of a
// response that RoundTrip did not read whole. fasthttp's server reads it
// while it writes the response to the client, after the request handler
// has returned, and closes it (CloseWithError) when it is done; only then
// does the backend connection go back to the pool, or get closed when the
// body did not end cleanly.
type Stream interface {
	fasthttp.ReadCloserWithError
	// Observe has o told about the body's progress and end. Call it at
	// most once, before the body is read.
	Observe(o Observer)
}

// Observer follows a Stream. Its methods run on the goroutine that writes
// the response, after the request handler has returned: they must not use
// the request's RequestCtx.
type Observer interface {
	// BodyRead is called before each read of the body.
	BodyRead()
	// BodyDone is called once, when the body is closed, with the bytes
	// read and, when the backend failed to deliver the body (reset,
	// timeout, malformed chunks), why. err is nil when the body ended
	// cleanly, and also when the reader stopped early because the client
	// went away, which is not the backend's failure.
	BodyDone(n int64, err error)
}

// stream is a Stream over fasthttp's framing reader (scratch's body
// stream: Content-Length, chunked, or to the end of the connection). It
// owns the backend connection until it is closed. Pooled.
type stream[C conn] struct {
	hc                     *fasthttp.HostClient
	cc                     C
	closeConn, releaseConn func(*fasthttp.HostClient, C)
	x                      *connIO
	prefix                 []byte // read ahead, served before r
	ahead                  [BufferLimit + 1]byte
	scratch                *fasthttp.Response // the head copy fasthttp's reader frames by; collects trailers
	r                      io.Reader
	closeAfter             bool
	want                   int64 // the Content-Length, or -1
	n                      int64
	eof                    bool
	err                    error
	obs                    Observer
}

// streamPool holds *stream[C] for the one C there is, fasthttp's
// connection type.
var streamPool sync.Pool

func openStream[C conn](x *connIO, hc *fasthttp.HostClient, cc C, req *fasthttp.Request, resp *fasthttp.Response,
	closeConn, releaseConn func(*fasthttp.HostClient, C),
) {
	s := newStream(x, hc, cc, req, resp, closeConn, releaseConn)
	resp.SetBodyStream(s, int(s.want))
}

// readAhead reads a body of unknown length up to BufferLimit: one that ends
// within it becomes the response's plain body; a longer one streams, what
// was read first.
func readAhead[C conn](x *connIO, hc *fasthttp.HostClient, cc C, req *fasthttp.Request, resp *fasthttp.Response,
	closeConn, releaseConn func(*fasthttp.HostClient, C),
) error {
	s := newStream(x, hc, cc, req, resp, closeConn, releaseConn)
	n, err := io.ReadFull(s, s.ahead[:])
	switch {
	case err == nil: // longer than BufferLimit
		s.prefix = s.ahead[:n]
		resp.SetBodyStream(s, -1)
		return nil
	case s.eof:
		if !resp.SkipBody {
			resp.SetBody(s.ahead[:n])
		}
		_ = s.CloseWithError(nil)
		return nil
	}
	_ = s.CloseWithError(err)
	return bodyError(err)
}

func newStream[C conn](x *connIO, hc *fasthttp.HostClient, cc C, req *fasthttp.Request, resp *fasthttp.Response,
	closeConn, releaseConn func(*fasthttp.HostClient, C),
) *stream[C] {
	s, _ := streamPool.Get().(*stream[C])
	if s == nil {
		s = &stream[C]{}
	}
	s.hc, s.cc, s.closeConn, s.releaseConn, s.x = hc, cc, closeConn, releaseConn, x
	s.closeAfter = resp.ConnectionClose() || req.ConnectionClose()
	s.scratch = fasthttp.AcquireResponse()
	resp.Header.CopyTo(&s.scratch.Header)
	s.scratch.StreamBody = true
	_ = s.scratch.ReadBody(x.br, 0) // with StreamBody it only sets up the reader
	s.r = s.scratch.BodyStream()
	n := resp.Header.ContentLength()
	if n < 0 {
		n = -1 // to the end of the connection upstream, chunked to the client
	}
	s.want = int64(n)
	return s
}

func (s *stream[C]) Observe(o Observer) { s.obs = o }

func (s *stream[C]) Read(p []byte) (int, error) {
	if s.r == nil {
		return 0, io.ErrClosedPipe
	}
	if len(s.prefix) > 0 {
		n := copy(p, s.prefix)
		s.prefix = s.prefix[n:]
		return n, nil
	}
	if s.obs != nil {
		s.obs.BodyRead()
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	switch {
	case err == io.EOF:
		s.eof = true
	case err != nil && s.err == nil:
		s.err = err
	}
	return n, err
}

// CloseWithError ends the body: the connection is pooled when the body was
// read to its end and nothing followed it, and closed otherwise.
func (s *stream[C]) CloseWithError(error) error {
	if s.r == nil {
		return nil
	}
	x := s.x
	done := s.eof || (s.want >= 0 && s.n == s.want)
	discard := !done || s.err != nil || s.closeAfter || x.br.Buffered() > 0
	fasthttp.ReleaseResponse(s.scratch) // releases fasthttp's reader before the buffer under it
	releaseIO(x)
	if discard {
		s.closeConn(s.hc, s.cc)
	} else {
		s.releaseConn(s.hc, s.cc)
	}
	obs, n, err := s.obs, s.n, s.err
	s.hc, s.cc, s.closeConn, s.releaseConn, s.x, s.prefix, s.scratch, s.r = nil, *new(C), nil, nil, nil, nil, nil, nil
	s.closeAfter, s.want, s.n, s.eof, s.err, s.obs = false, 0, 0, false, nil, nil
	streamPool.Put(s)
	if obs != nil {
		obs.BodyDone(n, err)
	}
	return nil
}
