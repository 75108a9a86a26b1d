//go:build !race

package upstream

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/sock"
)

// TestExchangeOverTCPZeroAllocs: an exchange with a backend over a real
// loopback socket, through Dial's Conn and SendThenRead, allocates
// nothing (the backend, a fasthttp server in this process, is counted
// too). The race detector allocates, hence the tag.
func TestExchangeOverTCPZeroAllocs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") },
		NoDefaultServerHeader: true, NoDefaultContentType: true, NoDefaultDate: true}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()

	c := &fasthttp.HostClient{
		Addr:                      ln.Addr().String(),
		MaxIdemponentCallAttempts: 1,
		Transport:                 &Transport{ResponseHeader: time.Second},
		Dial:                      func(a string) (net.Conn, error) { return sock.Dial(a, time.Second) },
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://backend/")
	do := func() {
		resp.Reset()
		if err := c.Do(req, resp); err != nil || string(resp.Body()) != "ok" {
			t.Fatalf("Do: %v, body %q", err, resp.Body())
		}
	}
	do()
	if got := testing.AllocsPerRun(500, do); got != 0 {
		t.Errorf("an exchange over TCP allocates %v times, want 0", got)
	}
	if n := c.ConnsCount(); n != 1 {
		t.Errorf("%d connections open after sequential requests, want 1 (kept alive)", n)
	}
}
