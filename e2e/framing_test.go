package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawBackend is a backend that counts every byte veer sends it, so a test
// can tell that nothing of a request reached it, and answers each request
// it can parse with 200 "ok". Safe for concurrent use.
type rawBackend struct {
	Addr     string
	bytes    atomic.Int64
	requests atomic.Int64
	mu       sync.Mutex
	bodies   []string
}

func newRawBackend(t *testing.T) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{Addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
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
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { b.serve(c) })
		}
	})
	return b
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (b *rawBackend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(countingReader{c, &b.bytes})
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		b.requests.Add(1)
		b.mu.Lock()
		b.bodies = append(b.bodies, string(body))
		b.mu.Unlock()
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func (b *rawBackend) lastBody() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bodies) == 0 {
		return ""
	}
	return b.bodies[len(b.bodies)-1]
}

// corpusCase is one file of testdata/requests: "# expect STATUS
// [forwarded]", comment lines, then the raw request bytes.
type corpusCase struct {
	name      string
	status    int
	forwarded bool
	raw       []byte
}

func readCorpus(t *testing.T, dir string) []corpusCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.http"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var out []corpusCase
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := corpusCase{name: strings.TrimSuffix(filepath.Base(f), ".http")}
		first, rest, _ := bytes.Cut(data, []byte("\n"))
		fields := strings.Fields(strings.TrimPrefix(string(first), "# expect "))
		if !bytes.HasPrefix(first, []byte("# expect ")) || len(fields) == 0 {
			t.Fatalf("%s: the first line must be \"# expect STATUS [forwarded]\", not %q", f, first)
		}
		if c.status, err = strconv.Atoi(fields[0]); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c.forwarded = len(fields) > 1 && fields[1] == "forwarded"
		for bytes.HasPrefix(rest, []byte("# ")) {
			_, rest, _ = bytes.Cut(rest, []byte("\n"))
		}
		c.raw = rest
		out = append(out, c)
	}
	return out
}

// sendRaw writes raw to veer on a new connection and reads the answer.
// With checkClose it also reports whether veer closed the connection
// after it (waiting up to 2s to see).
func sendRaw(t *testing.T, addr string, raw []byte, checkClose bool) (status int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(raw); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("write: %v (veer may have answered early)", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !checkClose {
		return resp.StatusCode, false
	}
	// A closed connection reads EOF (or a reset, when veer closed it with
	// request bytes unread); an open one times out.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = br.ReadByte()
	var ne net.Error
	closed = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	return resp.StatusCode, closed
}

// TestFramingCorpus sends every request of testdata/requests to the real
// binary over raw TCP: each gets its expected status; a rejected request
// closes its connection and nothing of it reaches the backend; and the next
// request, on a new connection, is served normally.
func TestFramingCorpus(t *testing.T) {
	be := newRawBackend(t)
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
state_file: state.json
limits: {max_header_bytes: 4096, max_uri_bytes: 1024, max_body_bytes: 32768, header_read_timeout: 2s}
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
`, be.Addr))
	cases := readCorpus(t, "testdata/requests")
	if len(cases) < 30 {
		t.Fatalf("the corpus has %d requests, want at least 30", len(cases))
	}
	const normal = "GET /after HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"
	rejected := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, beforeReq := be.bytes.Load(), be.requests.Load()
			status, closed := sendRaw(t, v.ProxyAddr, c.raw, c.status >= 400)
			if status != c.status {
				t.Errorf("status %d, want %d", status, c.status)
			}
			// Anything veer forwarded was written before it answered; give the
			// backend's reader a moment to count it.
			time.Sleep(20 * time.Millisecond)
			got, gotReq := be.bytes.Load()-before, be.requests.Load()-beforeReq
			switch {
			case c.forwarded && gotReq != 1:
				t.Errorf("the backend got %d requests, want 1", gotReq)
			case !c.forwarded && got != 0:
				t.Errorf("the backend received %d bytes of a request veer answered itself", got)
			}
			if c.status >= 400 {
				rejected++
				if !closed {
					t.Errorf("veer kept the connection open after a %d", status)
				}
			}
			if status, _ := sendRaw(t, v.ProxyAddr, []byte(normal), false); status != 200 {
				t.Errorf("the next request on a new connection: status %d, want 200", status)
			}
		})
	}
	t.Logf("%d requests, %d rejected", len(cases), rejected)
	// Every request veer answered itself is counted; a case whose trailing
	// bytes form a second, malformed request on the same connection counts
	// that one too, so the metric may exceed the cases by a few.
	turnedAway := 0
	for _, c := range cases {
		switch c.status {
		case 400, 405, 408, 413, 414, 417, 429, 431, 505:
			if !c.forwarded {
				turnedAway++
			}
		}
	}
	if got := metricValue(t, v.AdminURL(), "veer_rejected_requests_total"); int(got) < turnedAway || int(got) > turnedAway+5 {
		t.Errorf("veer_rejected_requests_total = %v, want %d to %d (the corpus's requests veer answered itself)", got, turnedAway, turnedAway+5)
	}
}

// TestFramingChunkedBodyArrivesWhole: a small chunked body reaches the
// backend re-framed by Content-Length, bytes intact.
func TestFramingChunkedBodyArrivesWhole(t *testing.T) {
	be := newRawBackend(t)
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
state_file: state.json
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
`, be.Addr))
	raw := "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
	if status, _ := sendRaw(t, v.ProxyAddr, []byte(raw), false); status != 200 {
		t.Fatalf("status %d", status)
	}
	if got := be.lastBody(); got != "hello world" {
		t.Errorf("the backend got body %q, want \"hello world\"", got)
	}
}
