package proxy

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/upstream"
)

var testLimits = config.Limits{MaxHeaderBytes: 4096, MaxURIBytes: 1024}

// parseHead reads raw as fasthttp's server does; ok is false when fasthttp
// refuses it itself.
func parseHead(raw string) (*fasthttp.RequestHeader, bool) {
	h := &fasthttp.RequestHeader{}
	if err := h.Read(bufio.NewReaderSize(strings.NewReader(raw), 64<<10)); err != nil {
		return nil, false
	}
	return h, true
}

// TestCheckRequest covers what veer refuses beyond fasthttp (the rest is
// in the e2e corpus, e2e/testdata/requests, against the binary).
func TestCheckRequest(t *testing.T) {
	const host = "Host: shop.example.com\r\n"
	tests := []struct {
		name string
		raw  string
		want int // 0 = forwarded
	}{
		{"plain", "GET /a/b?c=d HTTP/1.1\r\n" + host + "\r\n", 0},
		{"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 0},
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X-A: b\r\n c\r\n\r\n", 400},
		{"space in a name", "GET / HTTP/1.1\r\n" + host + "X A: b\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\r\n" + host + "X-A: b\nX-B: c\r\n\r\n", 400},
		{"version 1.2", "GET / HTTP/1.2\r\n" + host + "\r\n", 505},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405},
		{"TRACE", "TRACE / HTTP/1.1\r\n" + host + "\r\n", 405},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", 200},
		{"OPTIONS path", "OPTIONS /a HTTP/1.1\r\n" + host + "\r\n", 0},
		{"Expect other", "GET / HTTP/1.1\r\n" + host + "Expect: foo\r\n\r\n", 417},
		{"Expect 100-continue", "POST / HTTP/1.1\r\n" + host + "Expect: 100-Continue\r\nContent-Length: 1\r\n\r\n", 0},
		{"URI over the limit", "GET /" + strings.Repeat("a", 1024) + " HTTP/1.1\r\n" + host + "\r\n", 414},
		{"URI at the limit", "GET /" + strings.Repeat("a", 1023) + " HTTP/1.1\r\n" + host + "\r\n", 0},
		{"fields over the limit", "GET / HTTP/1.1\r\n" + host + "X: " + strings.Repeat("a", 4096) + "\r\n\r\n", 431},
		{"host with port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", 0},
		{"host IPv6", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", 0},
		{"host IPv6 unclosed", "GET / HTTP/1.1\r\nHost: [2001:db8::1\r\n\r\n", 400},
		{"host empty port", "GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", 400},
		{"host long port", "GET / HTTP/1.1\r\nHost: a.example:123456\r\n\r\n", 400},
		{"host userinfo", "GET / HTTP/1.1\r\nHost: u@a.example\r\n\r\n", 400},
		{"host slash", "GET / HTTP/1.1\r\nHost: a.example/b\r\n\r\n", 400},
		{"host empty on 1.0", "GET / HTTP/1.0\r\nHost:\r\n\r\n", 0},
		{"dot-dot", "GET /a/../b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"dot-dot at the end", "GET /a/.. HTTP/1.1\r\n" + host + "\r\n", 400},
		{"dot", "GET /a/. HTTP/1.1\r\n" + host + "\r\n", 400},
		{"encoded dot-dot", "GET /a/.%2E/b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"three dots are a name", "GET /a/.../b HTTP/1.1\r\n" + host + "\r\n", 0},
		{"dotted names", "GET /.well-known/a.b HTTP/1.1\r\n" + host + "\r\n", 0},
		{"dot-dot in the query is data", "GET /a?p=../b HTTP/1.1\r\n" + host + "\r\n", 0},
		{"percent-encoding", "GET /a%20b%2F HTTP/1.1\r\n" + host + "\r\n", 0},
		{"bad percent", "GET /a%g0 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"percent at the end", "GET /a% HTTP/1.1\r\n" + host + "\r\n", 400},
		{"encoded NUL", "GET /a%00 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"sloppy percent in a query", "GET /a?q=100% HTTP/1.1\r\n" + host + "\r\n", 0},
		{"fragment", "GET /a#b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"backslash", "GET /a\\b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"backslash in a query", "GET /a?b=c\\d HTTP/1.1\r\n" + host + "\r\n", 0},
		{"angle bracket", "GET /a<b HTTP/1.1\r\n" + host + "\r\n", 400},
		{"braces in a path", "GET /a{b} HTTP/1.1\r\n" + host + "\r\n", 400},
		{"braces in a query", "GET /a?b={c} HTTP/1.1\r\n" + host + "\r\n", 0},
		{"pipe and caret", "GET /a|b^c HTTP/1.1\r\n" + host + "\r\n", 0},
		{"raw UTF-8", "GET /\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute http", "GET http://a.example/x?y HTTP/1.1\r\n" + host + "\r\n", 0},
		{"absolute HTTPS, no path", "GET HTTPS://a.example HTTP/1.1\r\n" + host + "\r\n", 0},
		{"absolute, query only", "GET http://a.example?x=1 HTTP/1.1\r\n" + host + "\r\n", 0},
		{"absolute with userinfo", "GET http://u:p@a.example/ HTTP/1.1\r\n" + host + "\r\n", 0},
		{"absolute ws", "GET ws://a.example/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute, bad host", "GET http://a\"b/ HTTP/1.1\r\n" + host + "\r\n", 400},
		{"absolute, empty host", "GET http://:80/ HTTP/1.1\r\n" + host + "\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok := parseHead(tt.raw)
			if !ok {
				t.Fatalf("fasthttp refused %.100q itself: this case tests nothing of veer", tt.raw)
			}
			got := 0
			if rej, _ := checkRequest(h, &testLimits); rej != nil {
				got = rej.status
			}
			if got != tt.want {
				t.Errorf("checkRequest(%.100q) = %d, want %d", tt.raw, got, tt.want)
			}
		})
	}
}

func TestCheckRequestAllocatesNothing(t *testing.T) {
	h, _ := parseHead("POST /a/b/c?d=e HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 3\r\nX-A: b\r\nUser-Agent: x\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { _, _ = checkRequest(h, &testLimits) }); n != 0 {
		t.Errorf("checkRequest allocates %v times", n)
	}
}

// FuzzCheckRequest: whatever fasthttp parses and veer lets through is
// unambiguous: its field lines are strict (CRLF, no folding, token names,
// clean values), it has at most one framing header and one Host, and its
// target is origin-form or http(s) absolute-form without dot segments.
// Seeds are in testdata/fuzz/FuzzCheckRequest (the e2e corpus among them).
func FuzzCheckRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h := &fasthttp.RequestHeader{}
		if err := h.Read(bufio.NewReader(bytes.NewReader(raw))); err != nil {
			return
		}
		if rej, _ := checkRequest(h, &testLimits); rej != nil {
			if rej.status < 200 || rej.text == "" && rej != &answerOptions {
				t.Fatalf("rejection %+v without a status or text", rej)
			}
			return
		}
		var cl, te, host int
		f := upstream.Fields{Block: h.RawHeaders()}
		for f.Next() {
			switch {
			case bytes.EqualFold(f.Name, hdrContentLength):
				cl++
			case bytes.EqualFold(f.Name, hdrTransferEncoding):
				te++
			case bytes.EqualFold(f.Name, hdrHost):
				host++
			}
		}
		if f.Err != nil {
			t.Fatalf("forwarded %q with a bad field line: %v", raw, f.Err)
		}
		if cl+te > 1 || host > 1 {
			t.Fatalf("forwarded %q with %d Content-Length, %d Transfer-Encoding, %d Host", raw, cl, te, host)
		}
		target := h.RequestURI()
		if bytes.Contains(target, []byte("/../")) || bytes.HasSuffix(bytes.SplitN(target, []byte("?"), 2)[0], []byte("/..")) {
			t.Fatalf("forwarded the dot-dot target %q", target)
		}
		if p := string(h.Protocol()); p != "HTTP/1.1" && p != "HTTP/1.0" {
			t.Fatalf("forwarded version %q", p)
		}
	})
}

// checkRequest's scan of the field names finds every hop-by-hop header,
// in any case, so that prepareRequest skips removal only when there is
// nothing to remove; a request built in code counts as carrying all.
func TestCheckRequestFindsHeaders(t *testing.T) {
	tests := []struct {
		field string
		want  int
	}{
		{"Connection: x-a", hasHop}, {"connection: close", hasHop}, {"KEEP-ALIVE: 5", hasHop},
		{"Proxy-Connection: keep-alive", hasHop}, {"proxy-authenticate: x", hasHop},
		{"Proxy-Authorization: Basic eA==", hasHop}, {"TE: trailers", hasHop}, {"trailer: X-T", hasHop},
		{"upgrade: websocket", hasHop},
		{"x-forwarded-for: 1.2.3.4", hasXFF}, {"X-Forwarded-Proto: https", hasXFP},
		{"X-FORWARDED-HOST: a", hasXFH}, {"x-request-id: 1", hasReqID}, {"X-Veer-Version: canary", hasVersion},
		{"X-Forwarded-Fox: 1", 0}, {"Connections: 1", 0}, {"Tea: 1", 0}, {"User-Agent: a", 0},
	}
	for _, tt := range tests {
		h, ok := parseHead("GET / HTTP/1.1\r\nHost: a\r\n" + tt.field + "\r\n\r\n")
		if !ok {
			t.Fatalf("%q: fasthttp refused it", tt.field)
		}
		rej, has := checkRequest(h, &testLimits)
		if rej != nil {
			t.Fatalf("%q: rejected with %d", tt.field, rej.status)
		}
		if has != tt.want {
			t.Errorf("%q: found %b, want %b", tt.field, has, tt.want)
		}
	}
	var h fasthttp.RequestHeader
	h.SetHost("a")
	h.SetRequestURI("/")
	if _, has := checkRequest(&h, &testLimits); has != hasAll {
		t.Errorf("a head built in code: found %b, want every bit", has)
	}
}
