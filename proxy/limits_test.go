package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/metrics"
)

// rawSend writes raw (exact bytes) to addr on a new connection and reads
// one response; closed reports whether veer then closed the connection.
func rawSend(t *testing.T, addr string, raw []byte) (resp *fasthttp.Response, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = c.Write(raw) }() // veer may answer before it has read it all
	br := bufio.NewReader(c)
	resp = &fasthttp.Response{}
	if err := resp.Read(br); err != nil {
		t.Fatalf("no answer: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err = br.ReadByte()
	var ne net.Error
	closed = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	return resp, closed
}

func chunked(body []byte, size int) []byte {
	var b bytes.Buffer
	for len(body) > 0 {
		n := min(size, len(body))
		fmt.Fprintf(&b, "%x\r\n", n)
		b.Write(body[:n])
		b.WriteString("\r\n")
		body = body[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

// hashBackend answers each request with the length and SHA-256 of its
// body, and GET /download?n=N with N bytes of a pattern.
func hashBackend(t *testing.T) *backend {
	return newBackend(t, "blue", func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/download" {
			n, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("n")))
			ctx.SetBody(pattern(n))
			return
		}
		sum := sha256.Sum256(ctx.Request.Body())
		ctx.SetBodyString(strconv.Itoa(len(ctx.Request.Body())) + " " + hex.EncodeToString(sum[:]))
	})
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return strconv.Itoa(len(b)) + " " + hex.EncodeToString(sum[:])
}

func TestRequestBodies(t *testing.T) {
	be := hashBackend(t)
	v := startVeer(t, "limits: {max_body_bytes: 300000}\n"+oneVersion("", be.addr))
	const head = "POST /up HTTP/1.1\r\nHost: shop.example.com\r\n"
	small, large, tooLarge := pattern(5000), pattern(250000), pattern(300001)
	tests := []struct {
		name      string
		raw       []byte
		status    int
		body      string // what the backend got, when forwarded
		forwarded bool
	}{
		{"small, Content-Length", append([]byte(head+"Content-Length: 5000\r\n\r\n"), small...), 200, digest(small), true},
		{"small, chunked", append([]byte(head+"Transfer-Encoding: chunked\r\n\r\n"), chunked(small, 777)...), 200, digest(small), true},
		{"large, Content-Length (streamed)", append([]byte(head+"Content-Length: 250000\r\n\r\n"), large...), 200, digest(large), true},
		{"large, chunked (streamed)", append([]byte(head+"Transfer-Encoding: chunked\r\n\r\n"), chunked(large, 16000)...), 200, digest(large), true},
		{"Content-Length over the limit", append([]byte(head+"Content-Length: 300001\r\n\r\n"), tooLarge...), 413, "", false},
		{"chunked over the limit", append([]byte(head+"Transfer-Encoding: chunked\r\n\r\n"), chunked(tooLarge, 16000)...), 413, "", false},
		// counted as it arrives, never allocated for what a chunk size claims
		{"a terabyte chunk", append([]byte(head+"Transfer-Encoding: chunked\r\n\r\nfffffffff5\r\n"), tooLarge...), 413, "", false},
		{"broken chunk in a small body", []byte(head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"), 400, "", false},
		{"body shorter than its length", append([]byte(head+"Content-Length: 6000\r\n\r\n"), small...), 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := be.hits.Load()
			if tt.status == 0 { // the client sends less and goes away: nothing forwarded, no answer owed
				c, err := net.Dial("tcp", v.addr)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write(tt.raw)
				c.Close()
				time.Sleep(100 * time.Millisecond)
			} else {
				resp, closed := rawSend(t, v.addr, tt.raw)
				if resp.StatusCode() != tt.status {
					t.Fatalf("status %d (%q), want %d", resp.StatusCode(), resp.Body(), tt.status)
				}
				if tt.status >= 400 && !closed {
					t.Errorf("the connection stayed open after a %d", tt.status)
				}
				if tt.forwarded && string(resp.Body()) != tt.body {
					t.Errorf("the backend got %q, want %q", resp.Body(), tt.body)
				}
			}
			if got := be.hits.Load() - hits; tt.forwarded != (got == 1) {
				t.Errorf("backend hits %d, forwarded %v", got, tt.forwarded)
			}
		})
	}
	if n := v.metric(t, "veer_upstream_failures_total"); n != 0 {
		t.Errorf("the clients' broken bodies were counted as %v upstream failures", n)
	}
}

// TestWholeBodiesKeepTheirBytes: a body read whole is forwarded from the
// buffer it was read into, which goes back to a pool after the request;
// bodies of every size up to that buffer's, sent at once over several
// keep-alive connections, and a PUT retried on a second backend after
// the first refused it, must reach the backend byte for byte.
func TestWholeBodiesKeepTheirBytes(t *testing.T) {
	be := hashBackend(t)
	v := startVeer(t, oneVersion("", be.addr))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 12 {
				body := make([]byte, (w*4099+i*5471)%(bodyBuffer+1))
				for j := range body {
					body[j] = byte(w*31 + i*7 + j)
				}
				req, _ := http.NewRequest("POST", "http://"+v.addr+"/up", bytes.NewReader(body))
				req.Host = "shop.example.com"
				if i%2 == 1 {
					req.ContentLength = -1 // chunked
				}
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != digest(body) {
					errs <- fmt.Errorf("worker %d request %d: the backend got %s, want %s", w, i, got, digest(body))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	refused := refusedAddr(t)
	rv := startVeer(t, oneVersion("    outlier: {consecutive_5xx: 0}\n", refused, be.addr))
	body := pattern(40000)
	for range 2 { // the ring tries the refusing backend first in one of the two
		raw := append([]byte("PUT /up HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 40000\r\n\r\n"), body...)
		resp, _ := rawSend(t, rv.addr, raw)
		if string(resp.Body()) != digest(body) {
			t.Errorf("retried PUT: the backend got %q, want %q", resp.Body(), digest(body))
		}
	}
	if got := rv.metric(t, "veer_upstream_failures_total", "route", "shop", "version", "blue", "reason", "connect"); got != 1 {
		t.Errorf("%v refused attempts, want 1: the PUT was not retried", got)
	}
}

func TestExpectContinue(t *testing.T) {
	be := hashBackend(t)
	v := startVeer(t, "limits: {max_body_bytes: 1000}\n"+oneVersion("", be.addr))
	c, err := net.Dial("tcp", v.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 413") {
		t.Errorf("Expect: 100-continue with a body over the limit: %q, want 413 before the body", line)
	}

	c2, err := net.Dial("tcp", v.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c2, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	br := bufio.NewReader(c2)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("%q, want 100 Continue", line)
	}
	_, _ = br.ReadString('\n')
	_, _ = io.WriteString(c2, "hello")
	resp := &fasthttp.Response{}
	if err := resp.Read(br); err != nil || string(resp.Body()) != digest([]byte("hello")) {
		t.Errorf("after 100 Continue: %v %q", err, resp.Body())
	}
	if be.header("Expect") != nil {
		t.Errorf("Expect reached the backend: veer answered it")
	}
}

func TestResponseBodiesStreamAndAreRecordedAtTheirEnd(t *testing.T) {
	be := hashBackend(t)
	// A generous timeout here: under -race on a loaded machine a 3 MiB
	// answer may take longer than 300ms to start (that flaked in CI).
	v := startVeer(t, oneVersion("    timeouts: {response_header: 10s}\n    outlier: {consecutive_5xx: 0}\n", be.addr))
	for _, n := range []int{10, 100000, 3 << 20} {
		resp := v.get(t, fmt.Sprintf("/download?n=%d", n))
		if resp.StatusCode() != 200 || !bytes.Equal(resp.Body(), pattern(n)) {
			t.Errorf("%d bytes: status %d, %d bytes back", n, resp.StatusCode(), len(resp.Body()))
		}
	}
	w := v.table.Route("shop").Version("blue").Window
	if s := w.Stats(time.Now(), 0); s.Requests != 3 || s.Errors != 0 {
		t.Errorf("window: %d requests, %d errors; want 3 and 0", s.Requests, s.Errors)
	}

	// A backend that stops half way through a streamed body: the client's
	// answer is cut, and the window counts a failure when the body ends.
	cut := newRawBackend(t, "HTTP/1.1 200 OK\nContent-Length: 200000\n\n"+strings.Repeat("x", 100000))
	v2 := startVeer(t, oneVersion("    timeouts: {response_header: 300ms}\n    outlier: {consecutive_5xx: 0}\n", cut.addr))
	c, err := net.Dial("tcp", v2.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.Copy(io.Discard, c)
	if got >= 200000 {
		t.Errorf("the client got %d bytes of a body the backend cut", got)
	}
	w2 := v2.table.Route("shop").Version("blue").Window
	waitFor(t, "the cut body in the window", func() bool {
		s := w2.Stats(time.Now(), 0)
		return s.Requests == 1 && s.Errors == 1
	})
	if n := v2.metric(t, "veer_upstream_failures_total", "reason", "timeout"); n != 1 {
		t.Errorf("upstream failures{timeout} = %v, want 1", n)
	}
	if n := v2.metric(t, "veer_requests_total", "code", "2xx"); n != 1 {
		t.Errorf("requests{2xx} = %v, want 1 (the status the client got)", n)
	}
}

func TestClientTimeouts(t *testing.T) {
	be := newBackend(t, "blue", nil)
	v := startVeer(t, "limits: {header_read_timeout: 300ms, client_idle_timeout: 500ms}\n"+oneVersion("", be.addr))

	// A head that never ends: 408 at header_read_timeout, then closed.
	c, err := net.Dial("tcp", v.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, _ := io.ReadAll(c)
	// The server's clock starts when it accepts, which a loaded machine may
	// run before this goroutine reads its own: a little slack below 300ms.
	if took := time.Since(start); !bytes.HasPrefix(all, []byte("HTTP/1.1 408")) || took < 250*time.Millisecond || took > 2*time.Second {
		t.Errorf("unfinished head: %q after %v, want 408 after 300ms", firstLine(all), took)
	}

	// An idle keep-alive connection: closed at client_idle_timeout.
	c2, err := net.Dial("tcp", v.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _ = io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c2)
	resp := &fasthttp.Response{}
	if err := resp.Read(br); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("%v %d", err, resp.StatusCode())
	}
	start = time.Now()
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	if took := time.Since(start); err == nil || took < 450*time.Millisecond || took > 2*time.Second {
		t.Errorf("idle connection: %v after %v, want closed after 500ms", err, took)
	}
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

func TestMaxConnections(t *testing.T) {
	be := newBackend(t, "blue", nil)
	v := startVeer(t, "limits: {max_connections: 3}\n"+oneVersion("", be.addr))
	var open []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", v.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := &fasthttp.Response{}
		if err := resp.Read(bufio.NewReader(c)); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("connection %d: %v %d", len(open), err, resp.StatusCode())
		}
		open = append(open, c)
	}
	c, err := net.Dial("tcp", v.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, _ := io.ReadAll(c)
	if !bytes.HasPrefix(all, []byte("HTTP/1.1 503")) {
		t.Errorf("the fourth connection got %q, want 503 and closed", firstLine(all))
	}
	open[0].Close()
	waitFor(t, "a free connection", func() bool {
		c, err := net.Dial("tcp", v.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp := &fasthttp.Response{}
		return resp.Read(bufio.NewReader(c)) == nil && resp.StatusCode() == 200
	})
}

// TestRetryOnlyBeforeAnyResponseByte: a backend that closes the connection
// before answering is retried on the other; one that sends part of an
// answer is not (it may have acted on the request).
func TestRetryOnlyBeforeAnyResponseByte(t *testing.T) {
	tests := []struct {
		name, answer string
		want         int
		wantLive     int64
	}{
		{"closed before any byte", "close", 200, 1},
		{"part of the head, then closed", "HTTP/1.1 200 OK\nContent-Le", 502, 0},
		{"malformed head", "HTTP/1.1 200 OK\nContent-Length : 2\n\nok", 502, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := newClosingBackend(t, tt.answer)
			live := newBackend(t, "live", nil)
			// The round robin starts at the second backend: put bad there.
			v := startVeer(t, oneVersion("    outlier: {consecutive_5xx: 0}\n", live.addr, bad))
			resp := v.get(t, "/")
			if resp.StatusCode() != tt.want || live.hits.Load() != tt.wantLive {
				t.Errorf("status %d, live backend hit %d times; want %d and %d", resp.StatusCode(), live.hits.Load(), tt.want, tt.wantLive)
			}
		})
	}
}

// newClosingBackend reads a request, writes answer ("close": nothing) and
// closes the connection.
func newClosingBackend(t *testing.T, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var req fasthttp.Request
				if err := req.Read(bufio.NewReader(c)); err != nil {
					return
				}
				if answer != "close" {
					_, _ = io.WriteString(c, crlf(answer))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestFailoverToStable: a canary whose backends refuse connections hands
// every request, POST too (nothing of it was sent), to stable, and the
// failures count against the canary.
func TestFailoverToStable(t *testing.T) {
	blue := newBackend(t, "blue", nil)
	v := startVeer(t, blueCanary([]string{blue.addr}, []string{refusedAddr(t), refusedAddr(t)}, 0, 100,
		"    sticky: {cookie: veer}\n"))
	for _, method := range []string{"GET", "POST"} {
		resp := v.do(t, method, "/")
		if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Veer-Version")) != "blue" {
			t.Errorf("%s: %d from %q, want 200 from blue", method, resp.StatusCode(), resp.Header.Peek("X-Veer-Version"))
		}
		if c := resp.Header.PeekCookie("veer"); c != nil {
			t.Errorf("%s: a failed-over request pinned the client: %s", method, c)
		}
	}
	// GET: two canary backends tried, then stable; POST: one, then stable.
	if n := v.metric(t, "veer_upstream_failures_total", "version", "canary", "reason", "connect"); n != 3 {
		t.Errorf("canary connect failures = %v, want 3", n)
	}
	if s := v.table.Route("shop").Version("canary").Window.Stats(time.Now(), 0); s.Errors != 3 {
		t.Errorf("canary window errors = %d, want 3", s.Errors)
	}
	if n := v.metric(t, "veer_requests_total", "version", "blue", "code", "2xx"); n != 2 {
		t.Errorf("blue 2xx = %v, want 2", n)
	}
}

func TestRetryBudget(t *testing.T) {
	p := New(nil, metrics.New(), nil)
	tests := []struct {
		inflight, retrying int64
		want               bool
	}{
		{1, 0, true}, {1, 2, true}, {1, 3, false}, // at least 3, whatever the load
		{20, 3, true}, {20, 4, false}, // 20% of 20
		{100, 19, true}, {100, 20, false},
	}
	for _, tt := range tests {
		p.inflight.Store(tt.inflight)
		p.retrying.Store(tt.retrying)
		if got := p.retryBudget(); got != tt.want {
			t.Errorf("%d in flight, %d retrying: budget %v, want %v", tt.inflight, tt.retrying, got, tt.want)
		}
	}
}

func TestHTTP10WithoutHostAndOptionsAsterisk(t *testing.T) {
	be := newBackend(t, "blue", nil)
	v := startVeer(t, oneVersion("", be.addr))
	resp := roundTrip(t, v.addr, "GET /x HTTP/1.0\n\n")
	if resp.StatusCode() != 200 {
		t.Fatalf("HTTP/1.0 without Host: %d", resp.StatusCode())
	}
	if _, host, _ := be.lastRequest(); host != be.addr {
		t.Errorf("Host at the backend = %q, want the backend's address %q", host, be.addr)
	}
	hits := be.hits.Load()
	resp = roundTrip(t, v.addr, "OPTIONS * HTTP/1.1\nHost: shop.example.com\n\n")
	if resp.StatusCode() != 200 || be.hits.Load() != hits {
		t.Errorf("OPTIONS *: %d, backend hits +%d; want 200 from veer itself", resp.StatusCode(), be.hits.Load()-hits)
	}
}

// The proxy's listener turns off TCP keep-alive probes on accepted
// connections (Go turns them on by default, at four system calls each).
func TestListenWithoutKeepAliveProbes(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String()) // completes in the backlog, before Accept
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var serr error
	if err := raw.Control(func(fd uintptr) { on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if on != 0 {
		t.Errorf("SO_KEEPALIVE is %d on an accepted connection, want 0", on)
	}
}
