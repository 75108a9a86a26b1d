package proxy

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

// memVeer is a Proxy whose backends are fasthttp servers on in-memory
// listeners: nothing touches the network stack, so a benchmark measures
// veer and fasthttp, not the kernel.
type memVeer struct {
	p   *Proxy
	srv *fasthttp.Server
}

// newMemVeer compiles yaml and points every backend's client at an
// in-memory fasthttp backend that answers 200 "ok".
func newMemVeer(tb testing.TB, yaml string) *memVeer {
	tb.Helper()
	cfg, err := config.Parse("bench.yaml", []byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	m := metrics.New()
	tbl, err := router.Compile(cfg, nil, router.NewRegistry(m))
	if err != nil {
		tb.Fatal(err)
	}
	beLn := fasthttputil.NewInmemoryListener()
	be := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") },
		NoDefaultServerHeader: true, NoDefaultContentType: true}
	go func() { _ = be.Serve(beLn) }()
	tb.Cleanup(func() { _ = be.Shutdown() })
	for _, r := range tbl.Routes {
		for _, v := range r.Versions {
			for _, b := range v.Backends {
				b.Client.Dial = func(string) (net.Conn, error) { return beLn.Dial() }
			}
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := New(tbl, m, log)
	return &memVeer{p: p, srv: NewServer(p, cfg, log)}
}

// benchRoute is a route of two versions, 90/10, without sticky settings.
const benchRoute = `
routes:
  - name: shop
    match: {host: shop.example.com}
    stable: blue
    versions:
      blue:   {backends: ["127.0.0.1:9001", "127.0.0.1:9002"]}
      canary: {backends: ["127.0.0.1:9003"]}
    weights: {blue: 90, canary: 10}
`

// benchConfig is benchRoute sticky on X-User-ID.
const benchConfig = benchRoute + "    sticky: {header: X-User-ID}\n"

// BenchmarkProxyRequest is a whole proxied GET: a fasthttp client, veer's
// server and handler, and a fasthttp backend, over in-memory listeners.
// allocs/op counts all three.
func BenchmarkProxyRequest(b *testing.B) {
	mv := newMemVeer(b, benchConfig)
	ln := fasthttputil.NewInmemoryListener()
	go func() { _ = mv.srv.Serve(ln) }()
	b.Cleanup(func() { _ = mv.srv.Shutdown() })
	client := &fasthttp.HostClient{Addr: "veer", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://shop.example.com/products/42?color=red")
	req.Header.Set("User-Agent", "bench")
	b.ReportAllocs()
	for b.Loop() {
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatalf("status %d, err %v", resp.StatusCode(), err)
		}
	}
}

// BenchmarkHandler is veer's part of a proxied GET alone: Handler on a
// parsed request, forwarding to an in-memory backend. The backend's side
// runs in the same process and is counted too.
func BenchmarkHandler(b *testing.B) {
	for _, tt := range []struct{ name, header string }{
		{"weighted", ""},
		{"sticky", "X-User-ID: user-1234"},
		{"with X-Request-Id", "X-Request-Id: 0123456789abcdef"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			mv := newMemVeer(b, benchConfig)
			ctx, tmpl := handlerCtx(b, tt.header)
			b.ReportAllocs()
			for b.Loop() {
				tmpl.CopyTo(&ctx.Request)
				mv.p.Handler(ctx)
			}
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		})
	}
}

// handlerCtx returns a RequestCtx as the server would hand it to Handler,
// and the request to copy into it before each call (Handler rewrites it).
func handlerCtx(tb testing.TB, header string) (*fasthttp.RequestCtx, *fasthttp.Request) {
	tb.Helper()
	tmpl := &fasthttp.Request{}
	tmpl.Header.SetMethod("GET")
	tmpl.SetRequestURI("/products/42?color=red")
	tmpl.Header.SetHost("shop.example.com")
	tmpl.Header.Set("User-Agent", "bench")
	tmpl.Header.Set("Accept", "*/*")
	if k, v, ok := cut(header); ok {
		tmpl.Header.Set(k, v)
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(tmpl, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}, nil)
	return ctx, tmpl
}

func cut(h string) (string, string, bool) {
	for i := 0; i+1 < len(h); i++ {
		if h[i] == ':' && h[i+1] == ' ' {
			return h[:i], h[i+2:], true
		}
	}
	return "", "", false
}
