package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/accesslog"
	"github.com/veer-proxy/veer/metrics"
)

// oneVersion is a route "shop" with one version, blue, on backends.
func oneVersion(extra string, backends ...string) string {
	return fmt.Sprintf(`
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: %s}
%s`, yamlList(backends), extra)
}

// blueCanary is a route "shop" with blue (stable) and canary at the given
// weights.
func blueCanary(blue, canary []string, wBlue, wCanary int, extra string) string {
	return fmt.Sprintf(`
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: %s}
      canary: {backends: %s}
    weights: {blue: %d, canary: %d}
%s`, yamlList(blue), yamlList(canary), wBlue, wCanary, extra)
}

// yamlList is s as a YAML flow list of quoted strings.
func yamlList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func TestForwardedFor(t *testing.T) {
	be := newBackend(t, "blue", nil)
	untrusted := startVeer(t, oneVersion("", be.addr))
	trusted := startVeer(t, "trusted_proxies: [127.0.0.0/8, \"::1/128\"]\n"+oneVersion("", be.addr))
	tests := []struct {
		name    string
		v       *testVeer
		headers []string
		want    []string
	}{
		{"untrusted, none sent", untrusted, nil, []string{"127.0.0.1"}},
		{"untrusted, replaced", untrusted, []string{"X-Forwarded-For: 203.0.113.9"}, []string{"127.0.0.1"}},
		{"untrusted, every line replaced", untrusted,
			[]string{"X-Forwarded-For: 203.0.113.9", "X-Forwarded-For: 198.51.100.7"}, []string{"127.0.0.1"}},
		{"trusted, none sent", trusted, nil, []string{"127.0.0.1"}},
		{"trusted, appended", trusted, []string{"X-Forwarded-For: 203.0.113.9"}, []string{"203.0.113.9, 127.0.0.1"}},
		{"trusted, list appended", trusted, []string{"X-Forwarded-For: 203.0.113.9, 10.0.0.1"},
			[]string{"203.0.113.9, 10.0.0.1, 127.0.0.1"}},
		{"trusted, lines joined", trusted, []string{"X-Forwarded-For: 203.0.113.9", "x-forwarded-for: 198.51.100.7"},
			[]string{"203.0.113.9, 198.51.100.7, 127.0.0.1"}},
		{"trusted, empty value", trusted, []string{"X-Forwarded-For:"}, []string{"127.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if resp := tt.v.get(t, "/", tt.headers...); resp.StatusCode() != 200 {
				t.Fatalf("status %d", resp.StatusCode())
			}
			if got := be.header("X-Forwarded-For"); !equal(got, tt.want) {
				t.Errorf("X-Forwarded-For at the backend = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestForwardedProtoAndHost(t *testing.T) {
	be := newBackend(t, "blue", nil)
	untrusted := startVeer(t, oneVersion("", be.addr))
	trusted := startVeer(t, "trusted_proxies: [127.0.0.1/32]\n"+oneVersion("", be.addr))
	tests := []struct {
		name      string
		v         *testVeer
		headers   []string
		wantProto []string
		wantHost  []string
	}{
		{"set", untrusted, nil, []string{"http"}, []string{"shop.example.com"}},
		{"untrusted, replaced", untrusted, []string{"X-Forwarded-Proto: https", "X-Forwarded-Host: evil.example"},
			[]string{"http"}, []string{"shop.example.com"}},
		{"untrusted, every line replaced", untrusted,
			[]string{"X-Forwarded-Proto: https", "X-Forwarded-Proto: https", "X-Forwarded-Host: a", "X-Forwarded-Host: b"},
			[]string{"http"}, []string{"shop.example.com"}},
		{"trusted, kept", trusted, []string{"X-Forwarded-Proto: https", "X-Forwarded-Host: www.example.com"},
			[]string{"https"}, []string{"www.example.com"}},
		{"trusted, set when absent", trusted, nil, []string{"http"}, []string{"shop.example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if resp := tt.v.get(t, "/", tt.headers...); resp.StatusCode() != 200 {
				t.Fatalf("status %d", resp.StatusCode())
			}
			if got := be.header("X-Forwarded-Proto"); !equal(got, tt.wantProto) {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, tt.wantProto)
			}
			if got := be.header("X-Forwarded-Host"); !equal(got, tt.wantHost) {
				t.Errorf("X-Forwarded-Host = %q, want %q", got, tt.wantHost)
			}
			if _, host, _ := be.lastRequest(); host != "shop.example.com" {
				t.Errorf("Host at the backend = %q, want shop.example.com", host)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	be := newBackend(t, "blue", nil)
	v := startVeer(t, oneVersion("", be.addr))

	v.get(t, "/", "X-Request-Id: abc-123")
	if got := be.header("X-Request-Id"); !equal(got, []string{"abc-123"}) {
		t.Errorf("X-Request-Id sent by the client reached the backend as %q, want [abc-123]", got)
	}
	seen := map[string]bool{}
	for range 200 {
		v.get(t, "/")
		got := be.header("X-Request-Id")
		if len(got) != 1 || len(got[0]) < 16 {
			t.Fatalf("generated X-Request-Id = %q, want one id of at least 16 characters", got)
		}
		if seen[got[0]] {
			t.Fatalf("X-Request-Id %s generated twice", got[0])
		}
		seen[got[0]] = true
	}
	// Another proxy (another process, after a restart) does not repeat ids.
	v2 := startVeer(t, oneVersion("", be.addr))
	v2.get(t, "/")
	if id := be.header("X-Request-Id")[0]; seen[id] {
		t.Errorf("a second proxy generated %s again", id)
	}
}

// hopByHopRequest sends every hop-by-hop header, one named in Connection
// among other tokens and one named by a second Connection line.
var hopByHopRequest = []string{
	"Connection: keep-alive, X-Secret",
	"Connection: X-Other-Secret",
	"Keep-Alive: timeout=5",
	"Proxy-Connection: keep-alive",
	"TE: trailers",
	"Trailer: X-Checksum",
	"Upgrade: websocket",
	"Proxy-Authorization: Basic dXNlcjpwYXNz",
	"X-Secret: s3cret",
	"X-Other-Secret: s3cret",
	"X-Kept: yes",
}

var hopByHopNames = []string{"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade",
	"Proxy-Authorization", "X-Secret", "X-Other-Secret"}

func TestHopByHopRequest(t *testing.T) {
	be := newBackend(t, "blue", nil)
	v := startVeer(t, oneVersion("", be.addr))
	tests := []struct {
		name    string
		headers []string
		gone    []string
	}{
		{"all of them", hopByHopRequest, hopByHopNames},
		{"Connection: close names a header", []string{"Connection: close, X-Secret", "X-Secret: s", "X-Kept: yes"},
			[]string{"Connection", "X-Secret"}},
		{"many named headers", []string{"Connection: " + names("X-H", 20), headerLines("X-H", 20), "X-Kept: yes"},
			strings.Split(names("X-H", 20), ", ")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := v.get(t, "/", tt.headers...)
			if resp.StatusCode() != 200 {
				t.Fatalf("status %d", resp.StatusCode())
			}
			for _, h := range tt.gone {
				if got := be.header(h); got != nil {
					t.Errorf("%s reached the backend: %q", h, got)
				}
			}
			if got := be.header("X-Kept"); !equal(got, []string{"yes"}) {
				t.Errorf("X-Kept at the backend = %q, want [yes]", got)
			}
		})
	}
}

// names is "P-0, P-1, ..., P-(n-1)".
func names(prefix string, n int) string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("%s-%d", prefix, i))
	}
	return strings.Join(s, ", ")
}

// headerLines is the header lines "P-i: v" for i < n, joined by "\n".
func headerLines(prefix string, n int) string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("%s-%d: v", prefix, i))
	}
	return strings.Join(s, "\n")
}

func TestHopByHopResponse(t *testing.T) {
	be := newRawBackend(t, `HTTP/1.1 200 OK
Content-Length: 2
Connection: keep-alive, X-Private
Connection: X-Other-Private
X-Private: p
X-Other-Private: p
Keep-Alive: timeout=5, max=100
Proxy-Connection: keep-alive
Proxy-Authenticate: Basic realm="x"
Upgrade: h2c
TE: trailers
Trailer: X-Checksum
X-Veer-Version: forged
X-Veer-Version: forged-again
X-Kept: yes

ok`)
	v := startVeer(t, oneVersion("", be.addr))
	resp := v.get(t, "/")
	if resp.StatusCode() != 200 || string(resp.Body()) != "ok" {
		t.Fatalf("status %d body %q", resp.StatusCode(), resp.Body())
	}
	for _, h := range []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Upgrade", "TE", "Trailer",
		"X-Private", "X-Other-Private"} {
		if got := resp.Header.PeekAll(h); len(got) > 0 {
			t.Errorf("%s reached the client: %q", h, got)
		}
	}
	if got := resp.Header.PeekAll("Connection"); len(got) > 0 {
		t.Errorf("Connection reached the client: %q", got)
	}
	if got := string(resp.Header.Peek("X-Kept")); got != "yes" {
		t.Errorf("X-Kept = %q, want yes", got)
	}
	if got := resp.Header.PeekAll("X-Veer-Version"); len(got) != 1 || string(got[0]) != "blue" {
		t.Errorf("X-Veer-Version = %q, want only [blue]", got)
	}
}

func TestVersionHeaderAndMetrics(t *testing.T) {
	blue, canary := newBackend(t, "blue", nil), newBackend(t, "canary", func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/missing" {
			ctx.SetStatusCode(404)
		}
	})
	v := startVeer(t, blueCanary([]string{blue.addr}, []string{canary.addr}, 75, 25, ""))
	got := map[string]int{}
	for range 100 {
		resp := v.get(t, "/")
		ver := string(resp.Header.Peek("X-Veer-Version"))
		if backend := string(resp.Header.Peek("X-Backend")); backend != ver {
			t.Fatalf("X-Veer-Version %q but served by %q", ver, backend)
		}
		got[ver]++
	}
	if got["blue"] != 75 || got["canary"] != 25 {
		t.Errorf("split over 100 requests = %v, want blue 75 canary 25", got)
	}
	v.get(t, "/missing", "X-Veer-Version: canary")
	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"blue 2xx", "veer_requests_total", []string{"route", "shop", "version", "blue", "code", "2xx"}, 75},
		{"canary 2xx", "veer_requests_total", []string{"route", "shop", "version", "canary", "code", "2xx"}, 25},
		{"canary 4xx", "veer_requests_total", []string{"route", "shop", "version", "canary", "code", "4xx"}, 1},
		{"blue durations", "veer_request_duration_seconds", []string{"route", "shop", "version", "blue"}, 75},
		{"canary durations", "veer_request_duration_seconds", []string{"route", "shop", "version", "canary"}, 26},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := v.metric(t, tt.metric, tt.labels...); got != tt.want {
				t.Errorf("%s%v = %v, want %v", tt.metric, tt.labels, got, tt.want)
			}
		})
	}
}

func TestAbsoluteFormConnectsOnlyToTheBackend(t *testing.T) {
	be := newBackend(t, "blue", nil)
	evil := newRawBackend(t, "HTTP/1.1 200 OK\nContent-Length: 4\n\nevil")
	v := startVeer(t, oneVersion("", be.addr))
	tests := []struct {
		name, uri string
	}{
		{"http", "http://" + evil.addr + "/x?q=1"},
		{"https", "https://" + evil.addr + "/x?q=1"},
		{"userinfo", "http://user:pass@" + evil.addr + "/x?q=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := roundTrip(t, v.addr, "GET "+tt.uri+" HTTP/1.1\nHost: shop.example.com\n\n")
			if resp.StatusCode() != 200 || string(resp.Body()) != "blue\n" {
				t.Errorf("status %d body %q, want 200 from the configured backend", resp.StatusCode(), resp.Body())
			}
			if _, _, uri := be.lastRequest(); uri != "/x?q=1" {
				t.Errorf("the backend got request URI %q, want /x?q=1", uri)
			}
			if got := be.header("Authorization"); got != nil {
				t.Errorf("the URI's userinfo became Authorization %q at the backend", got)
			}
		})
	}
	if n := evil.conns.Load(); n != 0 {
		t.Errorf("veer opened %d connections to the host named in the request URI", n)
	}
}

func TestRefusedBackend(t *testing.T) {
	v := startVeer(t, oneVersion("", refusedAddr(t)))
	resp := v.get(t, "/")
	if resp.StatusCode() != 502 {
		t.Errorf("status %d, want 502", resp.StatusCode())
	}
	if ct := string(resp.Header.ContentType()); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if body := string(resp.Body()); !strings.Contains(body, "upstream") {
		t.Errorf("body %q does not say what failed", body)
	}
	if got := string(resp.Header.Peek("X-Veer-Version")); got != "blue" {
		t.Errorf("X-Veer-Version = %q, want blue", got)
	}
	if got := v.metric(t, "veer_upstream_failures_total", "route", "shop", "version", "blue", "reason", "connect"); got != 1 {
		t.Errorf("veer_upstream_failures_total{reason=connect} = %v, want 1", got)
	}
	if got := v.metric(t, "veer_requests_total", "route", "shop", "version", "blue", "code", "5xx"); got != 1 {
		t.Errorf("veer_requests_total{code=5xx} = %v, want 1", got)
	}
}

func TestSilentBackendTimesOut(t *testing.T) {
	be := newRawBackend(t, "") // reads the request, never answers
	v := startVeer(t, oneVersion("    timeouts: {response_header: 300ms}\n", be.addr))
	start := time.Now()
	resp := v.get(t, "/")
	took := time.Since(start)
	if resp.StatusCode() != 504 {
		t.Errorf("status %d, want 504", resp.StatusCode())
	}
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("answered after %v, want about the 300ms response_header timeout", took)
	}
	if got := v.metric(t, "veer_upstream_failures_total", "route", "shop", "version", "blue", "reason", "timeout"); got != 1 {
		t.Errorf("veer_upstream_failures_total{reason=timeout} = %v, want 1", got)
	}
}

func TestPanicIsRecovered(t *testing.T) {
	be := newBackend(t, "blue", nil)
	v := startVeer(t, oneVersion("", be.addr))
	v.panicky.Store(true)
	resp := v.get(t, "/")
	v.panicky.Store(false)
	if resp.StatusCode() != 500 {
		t.Errorf("status %d, want 500", resp.StatusCode())
	}
	if ct := string(resp.Header.ContentType()); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if got := v.metric(t, "veer_panics_total"); got != 1 {
		t.Errorf("veer_panics_total = %v, want 1", got)
	}
	if resp := v.get(t, "/"); resp.StatusCode() != 200 {
		t.Errorf("after a panic: status %d, want 200", resp.StatusCode())
	}
}

func TestRetries(t *testing.T) {
	refused := refusedAddr(t)
	// Passive ejection off, so that every request meets the refusing
	// backend in its turn.
	const noEjection = "    outlier: {consecutive_5xx: 0}\n"
	tests := []struct {
		name       string
		method     string
		extra      string
		want502    int
		wantServed int
	}{
		{"GET is retried", "GET", noEjection, 0, 10},
		{"HEAD is retried", "HEAD", noEjection, 0, 10},
		{"PUT is retried", "PUT", noEjection, 0, 10},
		{"POST is never retried", "POST", noEjection, 5, 5},
		{"PATCH is never retried", "PATCH", noEjection, 5, 5},
		{"no retries configured", "GET", noEjection + "    retries: {attempts: 0}\n", 5, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := newBackend(t, "live", nil)
			v := startVeer(t, oneVersion(tt.extra, refused, live.addr))
			n502 := 0
			for range 10 {
				resp := v.do(t, tt.method, "/")
				switch resp.StatusCode() {
				case 200:
				case 502:
					n502++
				default:
					t.Fatalf("status %d", resp.StatusCode())
				}
			}
			if n502 != tt.want502 || int(live.hits.Load()) != tt.wantServed {
				t.Errorf("10 %ss: %d answered 502, %d reached the live backend; want %d and %d",
					tt.method, n502, live.hits.Load(), tt.want502, tt.wantServed)
			}
			// Each request meets the refusing backend every other time.
			if got := v.metric(t, "veer_upstream_failures_total", "route", "shop", "version", "blue", "reason", "connect"); got != 5 {
				t.Errorf("veer_upstream_failures_total{reason=connect} = %v, want 5", got)
			}
		})
	}
}

func TestRetryCountsAgainstTheBudget(t *testing.T) {
	var v *testVeer
	inRetry := make(chan int64, 10)
	live := newBackend(t, "live", func(*fasthttp.RequestCtx) { inRetry <- v.p.retrying.Load() })
	v = startVeer(t, oneVersion("    outlier: {consecutive_5xx: 0}\n", refusedAddr(t), live.addr))
	for range 2 { // one of the two meets the refusing backend first
		if resp := v.get(t, "/"); resp.StatusCode() != 200 {
			t.Fatalf("status %d", resp.StatusCode())
		}
	}
	first, second := <-inRetry, <-inRetry
	if first+second != 1 {
		t.Errorf("retries in flight seen by the backend: %d and %d, want one retry (1) and one first try (0)", first, second)
	}
	if n := v.p.retrying.Load(); n != 0 {
		t.Errorf("retries in flight after the requests = %d, want 0", n)
	}
}

func TestNoHealthyBackend(t *testing.T) {
	blue, canary := newBackend(t, "blue", nil), newBackend(t, "canary", nil)
	v := startVeer(t, blueCanary([]string{blue.addr}, []string{canary.addr}, 0, 100, "    sticky: {cookie: veer}\n"))
	r := v.table.Route("shop")
	r.Version("canary").Backends[0].State.SetUp(false)

	resp := v.get(t, "/")
	if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Veer-Version")) != "blue" {
		t.Errorf("canary down: status %d version %q, want 200 from blue", resp.StatusCode(), resp.Header.Peek("X-Veer-Version"))
	}
	if c := resp.Header.PeekCookie("veer"); c != nil {
		t.Errorf("a request that fell back to stable pinned the client to it: Set-Cookie %s", c)
	}
	if got := v.metric(t, "veer_upstream_failures_total", "route", "shop", "version", "canary", "reason", "no-backend"); got != 1 {
		t.Errorf("canary's veer_upstream_failures_total{reason=no-backend} = %v, want 1", got)
	}

	r.Version("blue").Backends[0].State.SetUp(false)
	resp = v.get(t, "/")
	if resp.StatusCode() != 503 {
		t.Errorf("all down: status %d, want 503", resp.StatusCode())
	}
	if ra := string(resp.Header.Peek("Retry-After")); ra == "" {
		t.Errorf("503 without Retry-After")
	}
	if got := string(resp.Header.Peek("X-Veer-Version")); got != "blue" {
		t.Errorf("503's X-Veer-Version = %q, want blue", got)
	}
	if ct := string(resp.Header.ContentType()); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if got := v.metric(t, "veer_requests_total", "route", "shop", "version", "blue", "code", "5xx"); got != 1 {
		t.Errorf("veer_requests_total{blue,5xx} = %v, want 1", got)
	}
	if got := v.metric(t, "veer_request_duration_seconds", "route", "shop", "version", "blue"); got != 2 {
		t.Errorf("veer_request_duration_seconds_count{blue} = %v, want 2 (one per answered request)", got)
	}
	if blue.hits.Load()+canary.hits.Load() != 1 {
		t.Errorf("backends got %d requests, want 1", blue.hits.Load()+canary.hits.Load())
	}
}

func TestStickyCookieIsSet(t *testing.T) {
	blue, canary := newBackend(t, "blue", nil), newBackend(t, "canary", nil)
	v := startVeer(t, blueCanary([]string{blue.addr}, []string{canary.addr}, 0, 100, "    sticky: {cookie: veer}\n"))
	resp := v.get(t, "/")
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey("veer")
	if !resp.Header.Cookie(c) || string(c.Value()) != "canary" || !c.HTTPOnly() || string(c.Path()) != "/" {
		t.Errorf("Set-Cookie %q, want veer=canary; Path=/; HttpOnly", resp.Header.PeekCookie("veer"))
	}
	resp = v.get(t, "/", "Cookie: veer=canary")
	if got := resp.Header.PeekCookie("veer"); got != nil {
		t.Errorf("a request pinned by its cookie got a new one: %q", got)
	}
}

func TestNoRoute(t *testing.T) {
	be := newBackend(t, "blue", nil)
	v := startVeer(t, fmt.Sprintf(`
routes:
  - name: shop
    match: {host: shop.example.com, path_prefix: /api}
    stable: blue
    versions: {blue: {backends: [%q]}}
`, be.addr))
	if resp := v.get(t, "/elsewhere"); resp.StatusCode() != 404 {
		t.Errorf("status %d, want 404", resp.StatusCode())
	}
	if resp := v.get(t, "/api/x?y=1"); resp.StatusCode() != 200 {
		t.Errorf("status %d, want 200", resp.StatusCode())
	}
}

func TestConnectionClose(t *testing.T) {
	be := newBackend(t, "blue", func(ctx *fasthttp.RequestCtx) { ctx.SetConnectionClose() })
	v := startVeer(t, oneVersion("", be.addr))
	// The backend closing its connection is its own business...
	if resp := v.get(t, "/"); resp.ConnectionClose() {
		t.Errorf("the backend's Connection: close reached the client")
	}
	// ...and the client's is answered.
	if resp := v.get(t, "/", "Connection: close"); !resp.ConnectionClose() {
		t.Errorf("the client asked for Connection: close and did not get it")
	}
}

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantReason int
	}{
		{"no free connections", fasthttp.ErrNoFreeConns, 503, metrics.FailConnect},
		{"dial timeout", fasthttp.ErrDialTimeout, 504, metrics.FailConnect},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, 502, metrics.FailConnect},
		{"refused, wrapped", fmt.Errorf("error when dialing 127.0.0.1:1: %w",
			&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), 502, metrics.FailConnect},
		{"bare ECONNREFUSED", syscall.ECONNREFUSED, 502, metrics.FailConnect},
		{"dial timed out", &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, 504, metrics.FailConnect},
		{"unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}, 502, metrics.FailConnect},
		{"response timeout", fasthttp.ErrTimeout, 504, metrics.FailTimeout},
		{"deadline", os.ErrDeadlineExceeded, 504, metrics.FailTimeout},
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, 504, metrics.FailTimeout},
		{"context deadline", context.DeadlineExceeded, 504, metrics.FailTimeout},
		{"closed before answering", fasthttp.ErrConnectionClosed, 502, metrics.FailReset},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, 502, metrics.FailReset},
		{"EOF", io.EOF, 502, metrics.FailReset},
		{"unexpected EOF", io.ErrUnexpectedEOF, 502, metrics.FailReset},
		{"garbage answer", errors.New("cannot parse response status line"), 502, metrics.FailReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reason := Classify(tt.err)
			if status != tt.wantStatus || reason != tt.wantReason {
				t.Errorf("Classify(%v) = %d, %s; want %d, %s", tt.err, status, metrics.FailureReasons[reason],
					tt.wantStatus, metrics.FailureReasons[tt.wantReason])
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTLSBackend(t *testing.T) {
	be := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(be.Close)
	v := startVeer(t, fmt.Sprintf(`
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q], tls: {enabled: true, insecure_skip_verify: true}}
`, be.Listener.Addr().String()))
	for _, uri := range []string{"/", "http://shop.example.com/"} {
		resp := roundTrip(t, v.addr, "GET "+uri+" HTTP/1.1\nHost: shop.example.com\n\n")
		if resp.StatusCode() != 200 || string(resp.Body()) != "tls shop.example.com http" {
			t.Errorf("GET %s: status %d body %q, want 200 \"tls shop.example.com http\"", uri, resp.StatusCode(), resp.Body())
		}
	}
}

func TestNoTableYet(t *testing.T) {
	p := New(nil, metrics.New(), nil)
	ctx, _ := handlerCtx(t, "")
	p.Handler(ctx)
	if code := ctx.Response.StatusCode(); code != 503 || len(ctx.Response.Header.Peek("Retry-After")) == 0 {
		t.Errorf("before the first table: status %d, Retry-After %q; want 503 with Retry-After",
			code, ctx.Response.Header.Peek("Retry-After"))
	}
}

// A retried request's access log line names the backend that answered,
// not the one that refused it.
func TestAccessLogNamesTheBackendThatAnswered(t *testing.T) {
	refused := refusedAddr(t)
	live := newBackend(t, "live", nil)
	v := startVeer(t, oneVersion("    outlier: {consecutive_5xx: 0}\n", refused, live.addr))
	var buf syncBuffer
	al, err := accesslog.New(accesslog.Options{Writer: &buf, Buffer: 64})
	if err != nil {
		t.Fatal(err)
	}
	v.p.AccessLog = al
	for range 4 { // the ring sends every other request to the refusing backend first
		if resp := v.do(t, "GET", "/"); resp.StatusCode() != 200 {
			t.Fatalf("status %d", resp.StatusCode())
		}
	}
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d access log lines, want 4:\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, `"backend":"`+live.addr+`"`) {
			t.Errorf("a request the live backend answered is logged as: %s", l)
		}
	}
	if got := v.metric(t, "veer_upstream_failures_total", "route", "shop", "version", "blue", "reason", "connect"); got != 2 {
		t.Errorf("%v refused attempts, want 2: the test did not retry", got)
	}
}

// TestAccessLogTimesTheWholeRequest: the logged time is the request's
// start and the duration runs to its end, the backend's wait included
// (the server reads the clock for the request only when asked:
// LazyRequestTime).
func TestAccessLogTimesTheWholeRequest(t *testing.T) {
	const wait = 150 * time.Millisecond
	slow := newBackend(t, "slow", func(*fasthttp.RequestCtx) { time.Sleep(wait) })
	v := startVeer(t, oneVersion("", slow.addr))
	var buf syncBuffer
	al, err := accesslog.New(accesslog.Options{Writer: &buf, Buffer: 64})
	if err != nil {
		t.Fatal(err)
	}
	v.p.AccessLog = al
	sent := time.Now()
	if resp := v.do(t, "GET", "/"); resp.StatusCode() != 200 {
		t.Fatalf("status %d", resp.StatusCode())
	}
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}
	var e struct {
		Time     string  `json:"time"`
		Duration float64 `json:"duration"`
	}
	if err := json.Unmarshal(bytes.TrimSpace([]byte(buf.String())), &e); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if e.Duration < wait.Seconds() {
		t.Errorf("duration %v s, want at least the backend's %v", e.Duration, wait)
	}
	ts, err := time.Parse("2006-01-02T15:04:05.000Z07:00", e.Time)
	if err != nil {
		t.Fatal(err)
	}
	if ts.After(sent.Add(wait)) {
		t.Errorf("time %v is after the backend's wait (request sent at %v): the end, not the start", ts, sent)
	}
}

// syncBuffer is a bytes.Buffer safe for the access log's writer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
