package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/sock"
)

// scripted is a TCP backend on 127.0.0.1:0 that reads each request and
// runs answer on the connection with the request's path. It counts the
// connections it accepted.
type scripted struct {
	addr  string
	conns atomic.Int64
}

func newScripted(t *testing.T, answer func(c net.Conn, path string) bool) *scripted {
	t.Helper()
	return newScriptedReq(t, func(c net.Conn, req *fasthttp.Request) bool { return answer(c, string(req.URI().Path())) })
}

// newScriptedReq is newScripted with the whole request for answer.
func newScriptedReq(t *testing.T, answer func(c net.Conn, req *fasthttp.Request) bool) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var req fasthttp.Request
					if err := req.Read(br); err != nil {
						return
					}
					if !answer(c, &req) {
						return
					}
				}
			})
		}
	})
	return s
}

func lines(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func client(addr string, headerTimeout time.Duration) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                      addr,
		MaxIdemponentCallAttempts: 1,
		Transport:                 &Transport{ResponseHeader: headerTimeout},
		Dial:                      func(a string) (net.Conn, error) { return sock.Dial(a, time.Second) },
	}
}

func get(t *testing.T, c *fasthttp.HostClient, path string) (*fasthttp.Response, error) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://backend" + path)
	resp := &fasthttp.Response{}
	err := c.Do(req, resp)
	return resp, err
}

// drain reads a response's streamed body to its end and closes it, as
// fasthttp's server does when it writes the response.
func drain(t *testing.T, resp *fasthttp.Response) []byte {
	t.Helper()
	if !resp.IsBodyStream() {
		return resp.Body()
	}
	var buf bytes.Buffer
	_, err := io.Copy(&buf, resp.BodyStream())
	_ = resp.BodyStream().(Stream).CloseWithError(err)
	return buf.Bytes()
}

func TestResponseHeaderTimeout(t *testing.T) {
	be := newScripted(t, func(c net.Conn, path string) bool {
		switch path {
		case "/late":
			time.Sleep(600 * time.Millisecond)
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"))
		case "/trickle": // the head at once, then a byte every 100ms for 1s
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 10\n\n"))
			for i := range 10 {
				time.Sleep(100 * time.Millisecond)
				_, _ = c.Write([]byte{'0' + byte(i)})
			}
		case "/trickle-chunked":
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"))
			for i := range 10 {
				time.Sleep(100 * time.Millisecond)
				_, _ = io.WriteString(c, lines("1\n"+string(rune('0'+i))+"\n"))
			}
			_, _ = io.WriteString(c, lines("0\n\n"))
		case "/stall": // half the body, then silence
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 100000\n\n"))
			_, _ = c.Write(make([]byte, 70000))
			time.Sleep(2 * time.Second)
			return false
		}
		return true
	})
	c := client(be.addr, 300*time.Millisecond)

	start := time.Now()
	_, err := get(t, c, "/late")
	if !isTimeout(err) || time.Since(start) > time.Second {
		t.Errorf("a head 600ms late behind a 300ms timeout: err %v after %v, want a timeout after 300ms", err, time.Since(start))
	}
	for _, path := range []string{"/trickle", "/trickle-chunked"} {
		resp, err := get(t, c, path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if body := string(drain(t, resp)); body != "0123456789" {
			t.Errorf("%s: body %q after 1s of trickling behind a 300ms timeout, want it whole", path, body)
		}
	}
	resp, err := get(t, c, "/stall")
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = io.Copy(io.Discard, resp.BodyStream())
	if !isTimeout(err) || time.Since(start) > time.Second {
		t.Errorf("a body that stalls: %v after %v, want a timeout after 300ms", err, time.Since(start))
	}
}

func TestMalformedResponsesCloseTheConnection(t *testing.T) {
	bad := map[string]string{
		"/cl-te":    "HTTP/1.1 200 OK\nContent-Length: 2\nTransfer-Encoding: chunked\n\n0\n\n",
		"/fold":     "HTTP/1.1 200 OK\nContent-Length: 2\nX: a\n b\n\nok",
		"/colon":    "HTTP/1.1 200 OK\nContent-Length : 2\n\nok",
		"/status":   "HTTP/1.1 2000 OK\nContent-Length: 2\n\nok",
		"/chunk":    "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nzz\nok\n0\n\n",
		"/interims": strings.Repeat("HTTP/1.1 103 Early Hints\n\n", 9) + "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
	}
	be := newScripted(t, func(c net.Conn, path string) bool {
		if raw, ok := bad[path]; ok {
			_, _ = io.WriteString(c, lines(raw))
			return true
		}
		_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"))
		return true
	})
	c := client(be.addr, time.Second)
	for path := range bad {
		t.Run(path, func(t *testing.T) {
			if _, err := get(t, c, "/ok"); err != nil {
				t.Fatal(err)
			}
			before := be.conns.Load()
			_, err := get(t, c, path)
			if !errors.Is(err, ErrMalformedResponse) {
				t.Errorf("err %v, want ErrMalformedResponse", err)
			}
			if errors.Is(err, ErrNoResponse) {
				t.Errorf("err %v counts as no response: a retry would repeat a request the backend answered", err)
			}
			if _, err := get(t, c, "/ok"); err != nil {
				t.Fatal(err)
			}
			if be.conns.Load() != before+1 {
				t.Errorf("the next request did not open a new connection (%d → %d)", before, be.conns.Load())
			}
		})
	}
}

func TestExtraBytesCloseTheConnection(t *testing.T) {
	be := newScripted(t, func(c net.Conn, path string) bool {
		if path == "/extra" {
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 2\n\nokHTTP/1.1 200 OK\nContent-Length: 4\n\nevil"))
			return true
		}
		_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"))
		return true
	})
	c := client(be.addr, time.Second)
	resp, err := get(t, c, "/extra")
	if err != nil || string(resp.Body()) != "ok" {
		t.Fatalf("%v %q", err, resp.Body())
	}
	resp, err = get(t, c, "/next")
	if err != nil || string(resp.Body()) != "ok" {
		t.Fatalf("next: %v %q, want ok (never the smuggled \"evil\")", err, resp.Body())
	}
	if n := be.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the one with extra bytes must not be reused", n)
	}
}

func TestNoResponse(t *testing.T) {
	be := newScripted(t, func(c net.Conn, path string) bool {
		switch path {
		case "/close":
			return false // closed before any byte
		case "/partial":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
			return false
		}
		_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"))
		return true
	})
	c := client(be.addr, time.Second)
	if _, err := get(t, c, "/close"); !errors.Is(err, ErrNoResponse) {
		t.Errorf("closed before any byte: err %v, want ErrNoResponse", err)
	}
	if _, err := get(t, c, "/partial"); err == nil || errors.Is(err, ErrNoResponse) {
		t.Errorf("closed after part of the head: err %v, want an error that is not ErrNoResponse", err)
	}
}

// TestStaleKeepAliveIsRetried: a backend that closes idle connections
// (a shorter keep-alive than veer's) costs no failure.
func TestStaleKeepAliveIsRetried(t *testing.T) {
	var served atomic.Int64
	be := newScripted(t, func(c net.Conn, path string) bool {
		served.Add(1)
		_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"))
		return false // and close, without saying so
	})
	c := client(be.addr, time.Second)
	for i := range 5 {
		resp, err := get(t, c, "/")
		if err != nil || string(resp.Body()) != "ok" {
			t.Fatalf("request %d on a connection the backend closed: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	if served.Load() != 5 {
		t.Errorf("backend served %d, want 5", served.Load())
	}

	// A POST is not sent twice.
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://backend/")
	req.Header.SetMethod("POST")
	req.SetBodyString("x")
	resp := &fasthttp.Response{}
	err := c.Do(req, resp)
	if err == nil || !errors.Is(err, ErrNoResponse) {
		t.Errorf("POST on a stale connection: %v, want ErrNoResponse (not resent)", err)
	}
}

func TestStreamedBodyReleasesItsConnection(t *testing.T) {
	big := strings.Repeat("x", BufferLimit+1)
	be := newScripted(t, func(c net.Conn, path string) bool {
		switch path {
		case "/big":
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: "+itoa(len(big))+"\n\n")+big)
		case "/chunked-big":
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")+
				itohex(len(big))+"\r\n"+big+"\r\n0\r\n\r\n")
		case "/chunked-small":
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n"))
		case "/truncated":
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: "+itoa(len(big)+10)+"\n\n")+big)
			return false
		}
		return true
	})
	c := client(be.addr, time.Second)
	tests := []struct {
		path      string
		stream    bool
		body      string
		reused    bool
		wantError bool
	}{
		{"/big", true, big, true, false},
		{"/chunked-big", true, big, true, false},
		{"/chunked-small", false, "hello", true, false},
		{"/truncated", true, big, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			before := be.conns.Load()
			resp, err := get(t, c, tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if resp.IsBodyStream() != tt.stream {
				t.Errorf("streamed %v, want %v", resp.IsBodyStream(), tt.stream)
			}
			var o observer
			if s, ok := resp.BodyStream().(Stream); ok {
				s.Observe(&o)
			}
			if body := string(drain(t, resp)); body != tt.body {
				t.Errorf("body of %d bytes, want %d", len(body), len(tt.body))
			}
			if tt.stream && (o.done != 1 || (o.err != nil) != tt.wantError || o.reads == 0) {
				t.Errorf("observer: done %d times, err %v, %d reads; want once, error %v", o.done, o.err, o.reads, tt.wantError)
			}
			if _, err := get(t, c, "/chunked-small"); err != nil {
				t.Fatal(err)
			}
			if reused := be.conns.Load() == max(before, 1); reused != tt.reused {
				t.Errorf("connection reused %v, want %v", reused, tt.reused)
			}
		})
	}

	// A body abandoned half way closes its connection.
	before := be.conns.Load()
	resp, err := get(t, c, "/big")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = resp.BodyStream().Read(make([]byte, 10))
	_ = resp.BodyStream().(Stream).CloseWithError(errors.New("client went away"))
	if _, err := get(t, c, "/chunked-small"); err != nil {
		t.Fatal(err)
	}
	if be.conns.Load() != before+1 {
		t.Errorf("an abandoned body's connection was reused")
	}
}

type observer struct {
	reads, done int
	err         error
}

func (o *observer) BodyRead()                   { o.reads++ }
func (o *observer) BodyDone(_ int64, err error) { o.done++; o.err = err }

func TestInterimAndBodylessResponses(t *testing.T) {
	be := newScripted(t, func(c net.Conn, path string) bool {
		switch path {
		case "/hints":
			_, _ = io.WriteString(c, lines("HTTP/1.1 100 Continue\n\nHTTP/1.1 103 Early Hints\nLink: </a>\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok"))
		case "/head":
			_, _ = io.WriteString(c, lines("HTTP/1.1 200 OK\nContent-Length: 1000000\n\n"))
		case "/204":
			_, _ = io.WriteString(c, lines("HTTP/1.1 204 No Content\n\n"))
		}
		return true
	})
	c := client(be.addr, time.Second)
	resp, err := get(t, c, "/hints")
	if err != nil || resp.StatusCode() != 200 || string(resp.Body()) != "ok" {
		t.Errorf("after 1xx: %v %d %q", err, resp.StatusCode(), resp.Body())
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://backend/head")
	req.Header.SetMethod("HEAD")
	resp = &fasthttp.Response{}
	if err := c.Do(req, resp); err != nil || resp.Header.ContentLength() != 1000000 || len(resp.Body()) != 0 {
		t.Errorf("HEAD: %v, Content-Length %d, %d body bytes", err, resp.Header.ContentLength(), len(resp.Body()))
	}
	if resp, err := get(t, c, "/204"); err != nil || resp.StatusCode() != 204 {
		t.Errorf("204: %v", err)
	}
	if be.conns.Load() != 1 {
		t.Errorf("%d connections for bodyless answers, want 1", be.conns.Load())
	}
}

func itoa(n int) string { return string(fasthttp.AppendUint(nil, n)) }

func itohex(n int) string {
	const digits = "0123456789abcdef"
	var b []byte
	for ; n > 0; n /= 16 {
		b = append([]byte{digits[n%16]}, b...)
	}
	return string(b)
}

func TestCheckResponseHead(t *testing.T) {
	tests := []struct {
		name, head string
		ok         bool
	}{
		{"plain", "HTTP/1.1 200 OK\nContent-Length: 2\n\n", true},
		{"no reason", "HTTP/1.1 204\n\n", true},
		{"empty reason", "HTTP/1.1 204 \n\n", true},
		{"http/1.0", "HTTP/1.0 200 OK\n\n", true},
		{"chunked", "HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n", true},
		{"tabs around a value", "HTTP/1.1 200 OK\nX-A:\tb\t\n\n", true},
		{"obs-text", "HTTP/1.1 200 OK\nX-A: caf\xc3\xa9\n\n", true},
		{"version 1.2", "HTTP/1.2 200 OK\n\n", false},
		{"version 2", "HTTP/2 200 OK\n\n", false},
		{"two-digit status", "HTTP/1.1 20 OK\n\n", false},
		{"status 099", "HTTP/1.1 099 OK\n\n", false},
		{"status with letters", "HTTP/1.1 2x0 OK\n\n", false},
		{"no space after status", "HTTP/1.1 200OK\n\n", false},
		{"control in reason", "HTTP/1.1 200 O\x01K\n\n", false},
		{"CL and TE", "HTTP/1.1 200 OK\nContent-Length: 2\nTransfer-Encoding: chunked\n\n", false},
		{"two CL", "HTTP/1.1 200 OK\nContent-Length: 2\nContent-Length: 2\n\n", false},
		{"CL list", "HTTP/1.1 200 OK\nContent-Length: 2, 2\n\n", false},
		{"CL sign", "HTTP/1.1 200 OK\nContent-Length: +2\n\n", false},
		{"two TE", "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n", false},
		{"TE gzip", "HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n", false},
		{"TE in 1.0", "HTTP/1.0 200 OK\nTransfer-Encoding: chunked\n\n", false},
		{"fold", "HTTP/1.1 200 OK\nX-A: b\n c\n\n", false},
		{"space before colon", "HTTP/1.1 200 OK\nX-A : b\n\n", false},
		{"space in name", "HTTP/1.1 200 OK\nX A: b\n\n", false},
		{"no colon", "HTTP/1.1 200 OK\nX-A\n\n", false},
		{"empty name", "HTTP/1.1 200 OK\n: b\n\n", false},
		{"NUL", "HTTP/1.1 200 OK\nX-A: \x00\n\n", false},
		{"bare CR", "HTTP/1.1 200 OK\nX-A: a\rb\n\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckResponseHead([]byte(lines(tt.head)))
			if (err == nil) != tt.ok {
				t.Errorf("CheckResponseHead(%q) = %v, want ok %v", tt.head, err, tt.ok)
			}
		})
	}
	if err := CheckResponseHead([]byte("HTTP/1.1 200 OK\r\nX-A: b\nX-B: c\r\n\r\n")); err == nil {
		t.Errorf("a bare LF line end was accepted")
	}
}

// TestLargeBodyTailWaitsForTheRead: a request body larger than the write
// buffer's room leaves in two writes, bw's buffer and then the rest of
// the body straight from the request; that rest waits for the first
// read, which sends it and waits for the answer in one go
// (sock.Conn.SendThenRead). The backend must get every byte, in order.
func TestLargeBodyTailWaitsForTheRead(t *testing.T) {
	got := make(chan []byte, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(c)); err != nil {
			got <- nil
			return
		}
		got <- append([]byte(nil), req.Body()...)
		_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
	}()
	c, err := sock.Dial(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := make([]byte, 64<<10)
	for i := range body {
		body[i] = byte(i * 7)
	}
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://backend/upload")
	req.SetBodyRaw(body)

	x := acquireIO(c, time.Second, false)
	defer releaseIO(x)
	x.holdDirect = true
	if err := req.Write(x.bw); err != nil {
		t.Fatal(err)
	}
	x.holdDirect = false
	x.hold = true
	if err := x.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	x.hold = false
	// bw's first flush took ioBufferSize bytes (the head and the body's
	// start); the rest of the body is held, not copied and not sent.
	if len(x.held) == 0 || len(x.held) >= len(body) || unsafe.SliceData(x.held) != &body[len(body)-len(x.held)] {
		t.Fatalf("held %d bytes, not the tail of the %d-byte body", len(x.held), len(body))
	}
	if head := len(req.Header.Header()); len(x.held) != len(body)+head-ioBufferSize {
		t.Errorf("held %d bytes, want the body after the first %d bytes of the request", len(x.held), ioBufferSize)
	}
	if _, err := x.br.Peek(1); err != nil { // sends the tail, then waits for the answer
		t.Fatal(err)
	}
	if x.held != nil {
		t.Error("the held tail was not sent by the read")
	}
	if b := <-got; !bytes.Equal(b, body) {
		t.Errorf("the backend got %d bytes, not the body", len(b))
	}
}

// TestBodiesAroundTheWriteBuffer sends bodies of sizes around the write
// buffer's size through the transport (held or not, pieces written in
// order): the backend answers with what it got.
func TestBodiesAroundTheWriteBuffer(t *testing.T) {
	b := newScriptedEcho(t)
	c := client(b, time.Second)
	for _, n := range []int{1, ioBufferSize - 200, ioBufferSize - 1, ioBufferSize, ioBufferSize + 1, 2*ioBufferSize - 150, 2*ioBufferSize + 7, 64 << 10, 300 << 10} {
		// With a trailer the body goes chunked, and the last chunk and the
		// trailer follow the body's direct write through bw: the held
		// piece must leave before them.
		for _, trailer := range []bool{false, true} {
			body := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
			req := fasthttp.AcquireRequest()
			req.Header.SetMethod("PUT")
			req.SetRequestURI("http://backend/put")
			if trailer {
				if err := req.Header.SetTrailer("X-Sum"); err != nil {
					t.Fatal(err)
				}
				req.Header.Set("X-Sum", "42")
			}
			req.SetBodyRaw(body)
			var resp fasthttp.Response
			err := c.Do(req, &resp)
			fasthttp.ReleaseRequest(req)
			if err != nil {
				t.Fatalf("%d-byte body (trailer %v): %v", n, trailer, err)
			}
			if got := drain(t, &resp); !bytes.Equal(got, body) {
				t.Errorf("%d-byte body (trailer %v): the backend echoed %d bytes, not the body", n, trailer, len(got))
			}
		}
	}
}

// newScriptedEcho is a backend on 127.0.0.1:0 that answers each request
// with its body.
func newScriptedEcho(t *testing.T) string {
	t.Helper()
	return newScriptedReq(t, func(c net.Conn, req *fasthttp.Request) bool {
		var resp fasthttp.Response
		resp.SetBody(req.Body())
		bw := bufio.NewWriter(c)
		return resp.Write(bw) == nil && bw.Flush() == nil
	}).addr
}
