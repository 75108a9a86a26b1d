package proxy

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

// backend is a real fasthttp server on 127.0.0.1:0 that answers with its
// name (in the body and X-Backend) and keeps a copy of the last request.
// Safe for concurrent use.
type backend struct {
	name   string
	addr   string
	hits   atomic.Int64
	handle func(ctx *fasthttp.RequestCtx) // optional: runs after the default answer is set

	mu   sync.Mutex
	last fasthttp.Request
}

// newBackend starts a backend that stops at the end of the test.
func newBackend(t *testing.T, name string, handle func(ctx *fasthttp.RequestCtx)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String(), handle: handle}
	srv := &fasthttp.Server{Handler: b.serve, NoDefaultServerHeader: true, NoDefaultDate: true, NoDefaultContentType: true}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return b
}

func (b *backend) serve(ctx *fasthttp.RequestCtx) {
	b.hits.Add(1)
	b.mu.Lock()
	ctx.Request.CopyTo(&b.last)
	b.mu.Unlock()
	ctx.Response.Header.Set("X-Backend", b.name)
	ctx.SetBodyString(b.name + "\n")
	if b.handle != nil {
		b.handle(ctx)
	}
}

// header returns every value of the named header of the last request, in
// order (nil when absent).
func (b *backend) header(name string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, v := range b.last.Header.PeekAll(name) {
		out = append(out, string(v))
	}
	return out
}

// lastRequest returns the method, Host header and request URI of the last
// request.
func (b *backend) lastRequest() (method, host, uri string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.last.Header.Method()), string(b.last.Header.Host()), string(b.last.Header.RequestURI())
}

// rawBackend is a TCP server on 127.0.0.1:0 that reads requests and writes
// answer, byte for byte, to each (or never answers when answer is "").
// It counts the connections it accepts.
type rawBackend struct {
	addr  string
	conns atomic.Int64
}

func newRawBackend(t *testing.T, answer string) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rb := &rawBackend{addr: ln.Addr().String()}
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rb.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReader(c)
				for {
					var req fasthttp.Request
					if err := req.Read(br); err != nil {
						return
					}
					if answer == "" {
						_, _ = io.Copy(io.Discard, c) // hold the connection, say nothing
						return
					}
					if _, err := io.WriteString(c, crlf(answer)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return rb
}

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testVeer is a Proxy behind a real fasthttp server on 127.0.0.1:0.
type testVeer struct {
	p       *Proxy
	m       *metrics.Metrics
	table   *router.Table
	addr    string
	panicky atomic.Bool // makes the clock panic, to test recovery
}

// startVeer compiles yaml and serves it until the end of the test.
func startVeer(t testing.TB, yaml string) *testVeer {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, yaml)
	}
	m := metrics.New()
	tbl, err := router.Compile(cfg, nil, router.NewRegistry(m))
	if err != nil {
		t.Fatalf("router.Compile: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	v := &testVeer{p: New(tbl, m, log), m: m, table: tbl}
	v.p.Now = func() time.Time {
		if v.panicky.Load() {
			panic("test: the clock broke")
		}
		return time.Now()
	}
	ln, err := Listen("127.0.0.1:0") // the proxy's own listener, as app uses it
	if err != nil {
		t.Fatal(err)
	}
	v.addr = ln.Addr().String()
	srv := NewServer(v.p, cfg, log)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return v
}

// crlf turns the "\n" line ends of a readable raw message into "\r\n".
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// roundTrip sends raw (a whole request, "\n" line ends, ending with an
// empty line) to addr on a new connection and reads the answer.
func roundTrip(t testing.TB, addr, raw string) *fasthttp.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, crlf(raw)); err != nil {
		t.Fatal(err)
	}
	resp := &fasthttp.Response{SkipBody: strings.HasPrefix(raw, "HEAD ")}
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	return resp
}

// get sends "METHOD path" to veer with Host shop.example.com and extra
// header lines ("Name: value").
func (v *testVeer) do(t testing.TB, method, path string, headers ...string) *fasthttp.Response {
	t.Helper()
	raw := method + " " + path + " HTTP/1.1\nHost: shop.example.com\n"
	for _, h := range headers {
		raw += h + "\n"
	}
	if method == "POST" || method == "PUT" {
		raw += "Content-Length: 4\n\nbody"
	} else {
		raw += "\n"
	}
	return roundTrip(t, v.addr, raw)
}

func (v *testVeer) get(t testing.TB, path string, headers ...string) *fasthttp.Response {
	t.Helper()
	return v.do(t, "GET", path, headers...)
}

// metric returns the value of the sample of name whose labels include
// labels (name, value pairs): a counter's or gauge's value, a histogram's
// count; 0 when there is none.
func (v *testVeer) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := v.m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
