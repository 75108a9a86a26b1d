package proxy

import (
	"bufio"
	"bytes"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzHandler feeds arbitrary requests, as fasthttp's server would parse
// them, through Handler to an in-memory backend: no panic (a 500), and
// nothing named in Connection is left in a forwarded request.
func FuzzHandler(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"GET http://evil.example/x?y=1 HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"GET https://u:p@shop.example.com:443/a/../b HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: SHOP.example.com.\r\nConnection: close, X-A, , Host, Content-Length\r\nX-A: 1\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: shop.example.com\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: a\r\nX-Forwarded-For: b\r\nX-Veer-Version: canary\r\nX-User-ID: u\r\nCookie: veer=blue\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	mv := newMemVeer(f, benchRoute+"    sticky: {header: X-User-ID, cookie: veer}\n    rules: [{query: beta, version: canary}]\n")
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &fasthttp.Request{}
		// Bounded like veer's own server: an unbounded Read would allocate
		// whatever a chunk size claims (a terabyte once, and the fuzzer died).
		if err := req.ReadLimitBody(bufio.NewReader(bytes.NewReader(raw)), 1<<20); err != nil {
			return
		}
		var named [][]byte
		for _, line := range req.Header.PeekAll(fasthttp.HeaderConnection) {
			for tok := range bytes.SplitSeq(line, []byte(",")) {
				if tok = bytes.TrimSpace(tok); len(tok) > 0 && !framing(tok) {
					named = append(named, bytes.Clone(tok))
				}
			}
		}
		ctx := &fasthttp.RequestCtx{}
		ctx.Init(req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}, nil)
		mv.p.Handler(ctx)
		if code := ctx.Response.StatusCode(); code == 500 {
			t.Fatalf("500 (a recovered panic) for %q", raw)
		}
		if string(ctx.Response.Body()) != "ok" {
			return // not forwarded: no route, or the backend refused it
		}
		for _, name := range named {
			if ctx.Request.Header.PeekBytes(name) != nil && !bytes.EqualFold(name, []byte("close")) {
				t.Errorf("%s, named in Connection, was forwarded", name)
			}
		}
	})
}
