package proxy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/accesslog"
)

// echoBackend is a raw TCP backend that answers an upgrade request with
// 101 (and greeting, in the same write), then echoes every byte until the
// client half-closes, answers "bye" and closes. It keeps the head of the
// last request. Safe for concurrent use.
type echoBackend struct {
	addr     string
	greeting string
	refuse   string // when set, the whole answer to every request instead of the 101
	mu       sync.Mutex
	lastHead string
}

func newEchoBackend(t *testing.T, greeting string) *echoBackend {
	t.Helper()
	return newEchoBackendOn(t, greeting, nil)
}

// newEchoBackendOn is newEchoBackend over TLS when tc is set.
func newEchoBackendOn(t *testing.T, greeting string, tc *tls.Config) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	eb := &echoBackend{addr: ln.Addr().String(), greeting: greeting}
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				eb.serve(c)
			}()
		}
	}()
	return eb
}

func (eb *echoBackend) serve(c net.Conn) {
	br := bufio.NewReader(c)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	eb.mu.Lock()
	eb.lastHead = head.String()
	eb.mu.Unlock()
	if eb.refuse != "" {
		io.WriteString(c, crlf(eb.refuse))
		return
	}
	io.WriteString(c, crlf("HTTP/1.1 101 Switching Protocols\nUpgrade: echo\nConnection: Upgrade\nKeep-Alive: timeout=5\nX-Backend-Says: hi\nX-Veer-Version: forged\n\n")+eb.greeting)
	io.Copy(c, br) // echo until the client half-closes
	io.WriteString(c, "bye")
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// head returns the last request head the backend read, with "\r\n" as "\n".
func (eb *echoBackend) head() string {
	eb.mu.Lock()
	defer eb.mu.Unlock()
	return strings.ReplaceAll(eb.lastHead, "\r\n", "\n")
}

const upgradeRoute = `
routes:
  - name: shop
    match: {host: shop.example.com}
    stable: blue
    versions:
      blue:   {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 100, canary: 0}
    sticky: {header: X-User-ID, cookie: veer}
    timeouts: {upgrade_idle: %s}
`

// dialUpgrade sends an upgrade request (plus extra header lines and early
// bytes right after it) and reads the answer's head.
func dialUpgrade(t *testing.T, addr string, extra []string, early string) (net.Conn, *bufio.Reader, *fasthttp.ResponseHeader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	raw := "GET /chat?room=1 HTTP/1.1\nHost: shop.example.com\nConnection: keep-alive, Upgrade\nUpgrade: echo\n"
	for _, h := range extra {
		raw += h + "\n"
	}
	if _, err := io.WriteString(c, crlf(raw+"\n")+early); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var h fasthttp.ResponseHeader
	if err := h.Read(br); err != nil {
		t.Fatalf("reading the answer's head: %v", err)
	}
	return c, br, &h
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", n, err, buf)
	}
	return string(buf)
}

func TestUpgradeTunnel(t *testing.T) {
	blue, canary := newEchoBackend(t, "hello"), newEchoBackend(t, "hello from canary")
	v := startVeer(t, fmt.Sprintf(upgradeRoute, blue.addr, canary.addr, "1h"))
	c, br, h := dialUpgrade(t, v.addr, []string{"X-Veer-Version: canary", "Keep-Alive: timeout=9", "Connection: X-Secret", "X-Secret: s3"}, "early")

	if got := h.StatusCode(); got != 101 {
		t.Fatalf("status: got %d, want 101", got)
	}
	for name, want := range map[string]string{"Upgrade": "echo", "X-Veer-Version": "canary", "X-Backend-Says": "hi", "Keep-Alive": "", "Content-Length": ""} {
		if got := string(h.Peek(name)); got != want {
			t.Errorf("answer's %s: got %q, want %q", name, got, want)
		}
	}
	if !h.ConnectionUpgrade() {
		t.Errorf("answer's Connection: got %q, want Upgrade", h.Peek("Connection"))
	}
	if got := readN(t, br, len("hello from canary")); got != "hello from canary" {
		t.Errorf("bytes the backend sent with its 101: got %q", got)
	}
	if got := readN(t, br, len("early")); got != "early" {
		t.Errorf("bytes sent right after the request: got %q echoed, want %q", got, "early")
	}
	head := canary.head()
	for _, want := range []string{"GET /chat?room=1 HTTP/1.1\n", "\nUpgrade: echo\n", "\nConnection: Upgrade\n", "\nX-Forwarded-For: 127.0.0.1\n", "\nX-Forwarded-Proto: http\n", "\nX-Request-Id: "} {
		if !strings.Contains(head, want) {
			t.Errorf("the backend's request head lacks %q:\n%s", want, head)
		}
	}
	for _, gone := range []string{"Keep-Alive", "X-Secret", "keep-alive"} {
		if strings.Contains(head, gone) {
			t.Errorf("the backend's request head has hop-by-hop %q:\n%s", gone, head)
		}
	}
	if blue.head() != "" {
		t.Error("blue got a request; the override named canary")
	}

	// Many messages both ways, in pieces of every size.
	var sent bytes.Buffer
	for i := 0; i < 200; i++ {
		msg := strings.Repeat(string(rune('a'+i%26)), i*37%4000+1)
		sent.WriteString(msg)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, br, len(msg)); got != msg {
			t.Fatalf("message %d: echoed %d bytes differ", i, len(msg))
		}
	}
	if got := v.p.Upgraded(); got != 1 {
		t.Errorf("Upgraded: got %d, want 1", got)
	}
	// The client is done sending: the backend sees EOF, answers, closes.
	c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye" {
		t.Errorf("after the half-close: got %q, %v; want \"bye\" then EOF", rest, err)
	}
	waitFor(t, "the tunnel to be forgotten", func() bool { return v.p.Upgraded() == 0 })
	if got := v.metric(t, "veer_requests_total", "version", "canary", "code", "1xx"); got != 1 {
		t.Errorf("veer_requests_total{canary,1xx}: got %v, want 1", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUpgradeStickyCookie: a browser pinned by the weights gets its cookie
// on the 101, and the cookie brings its next upgrade to the same version.
func TestUpgradeStickyCookie(t *testing.T) {
	blue, canary := newEchoBackend(t, ""), newEchoBackend(t, "")
	v := startVeer(t, fmt.Sprintf(upgradeRoute, blue.addr, canary.addr, "1h"))
	_, _, h := dialUpgrade(t, v.addr, nil, "")
	if got := string(h.PeekCookie("veer")); !strings.Contains(got, "veer=blue") {
		t.Errorf("Set-Cookie on the 101: got %q, want veer=blue", got)
	}
	_, _, h = dialUpgrade(t, v.addr, []string{"Cookie: veer=canary"}, "")
	if got := string(h.Peek("X-Veer-Version")); got != "blue" {
		// canary has weight 0: a cookie for it is not honoured (SPEC).
		t.Errorf("cookie for a version at weight 0: served by %q, want blue", got)
	}
}

func TestUpgradeRefusedOrFailed(t *testing.T) {
	refusing := newEchoBackend(t, "")
	refusing.refuse = "HTTP/1.1 426 Upgrade Required\nContent-Length: 6\nConnection: close\n\nno way"
	t.Run("backend refuses", func(t *testing.T) {
		v := startVeer(t, fmt.Sprintf(upgradeRoute, refusing.addr, refusing.addr, "1h"))
		c, br, h := dialUpgrade(t, v.addr, nil, "")
		defer c.Close()
		if got := h.StatusCode(); got != 426 {
			t.Fatalf("status: got %d, want 426", got)
		}
		if got := readN(t, br, 6); got != "no way" {
			t.Errorf("body: got %q", got)
		}
		if got := string(h.Peek("X-Veer-Version")); got != "blue" {
			t.Errorf("X-Veer-Version: got %q, want blue", got)
		}
		if got := v.metric(t, "veer_requests_total", "version", "blue", "code", "4xx"); got != 1 {
			t.Errorf("veer_requests_total{blue,4xx}: got %v, want 1", got)
		}
	})
	t.Run("upgrade with a body", func(t *testing.T) {
		eb := newEchoBackend(t, "")
		v := startVeer(t, fmt.Sprintf(upgradeRoute, eb.addr, eb.addr, "1h"))
		resp := roundTrip(t, v.addr, "POST /chat HTTP/1.1\nHost: shop.example.com\nConnection: Upgrade\nUpgrade: echo\nContent-Length: 4\n\nbody")
		if got := resp.StatusCode(); got != 400 {
			t.Errorf("status: got %d, want 400", got)
		}
		if eb.head() != "" {
			t.Error("the backend got the upgrade request with a body")
		}
	})
	t.Run("backend unreachable", func(t *testing.T) {
		dead := refusedAddr(t)
		v := startVeer(t, fmt.Sprintf(upgradeRoute, dead, dead, "1h"))
		_, _, h := dialUpgrade(t, v.addr, nil, "")
		if got := h.StatusCode(); got != 502 {
			t.Fatalf("status: got %d, want 502", got)
		}
		if got := v.metric(t, "veer_upstream_failures_total", "version", "blue", "reason", "connect"); got < 1 {
			t.Errorf("veer_upstream_failures_total{blue,connect}: got %v, want at least 1", got)
		}
		if got := v.metric(t, "veer_requests_total", "version", "blue", "code", "5xx"); got != 1 {
			t.Errorf("veer_requests_total{blue,5xx}: got %v, want 1", got)
		}
	})
	t.Run("a dead canary hands the upgrade to stable", func(t *testing.T) {
		blue := newEchoBackend(t, "hi")
		dead := refusedAddr(t)
		v := startVeer(t, fmt.Sprintf(upgradeRoute, blue.addr, dead, "1h"))
		c, br, h := dialUpgrade(t, v.addr, []string{"X-Veer-Version: canary"}, "")
		defer c.Close()
		if got := h.StatusCode(); got != 101 {
			t.Fatalf("status %d, want 101 from stable", got)
		}
		if got := string(h.Peek("X-Veer-Version")); got != "blue" {
			t.Errorf("X-Veer-Version: got %q, want blue (the version that served it)", got)
		}
		if got := readN(t, br, 2); got != "hi" {
			t.Errorf("greeting: got %q, want stable's", got)
		}
		if got := v.metric(t, "veer_upstream_failures_total", "version", "canary", "reason", "connect"); got != 1 {
			t.Errorf("veer_upstream_failures_total{canary,connect}: got %v, want 1 (counted against the canary)", got)
		}
		if got := v.metric(t, "veer_requests_total", "version", "blue", "code", "1xx"); got != 1 {
			t.Errorf("veer_requests_total{blue,1xx}: got %v, want 1", got)
		}
	})
	t.Run("retried on another backend", func(t *testing.T) {
		good := newEchoBackend(t, "ok")
		dead := refusedAddr(t)
		cfg := strings.Replace(fmt.Sprintf(upgradeRoute, "X", good.addr, "1h"), `["X"]`, fmt.Sprintf("[%q, %q]", dead, good.addr), 1)
		v := startVeer(t, cfg)
		for i := 0; i < 4; i++ { // round robin starts on either backend
			c, br, h := dialUpgrade(t, v.addr, nil, "")
			if got := h.StatusCode(); got != 101 {
				t.Fatalf("attempt %d: status %d, want 101 (the dead backend's refusal retried)", i, got)
			}
			if got := readN(t, br, 2); got != "ok" {
				t.Errorf("greeting: got %q", got)
			}
			c.Close()
		}
	})
}

// TestUpgradeIdleTimeout: a tunnel with no byte either way for
// upgrade_idle is closed; one with traffic in only one direction is not.
func TestUpgradeIdleTimeout(t *testing.T) {
	eb := newEchoBackend(t, "")
	v := startVeer(t, fmt.Sprintf(upgradeRoute, eb.addr, eb.addr, "300ms"))

	busy, busyR, _ := dialUpgrade(t, v.addr, nil, "")
	idle, idleR, _ := dialUpgrade(t, v.addr, nil, "")
	start := time.Now()
	for time.Since(start) < 900*time.Millisecond {
		io.WriteString(busy, "x")
		readN(t, busyR, 1)
		time.Sleep(50 * time.Millisecond)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idleR.Read(make([]byte, 1)); err == nil {
		t.Errorf("idle tunnel: read %d bytes, want EOF", n)
	}
	if _, err := io.WriteString(busy, "y"); err != nil {
		t.Fatalf("busy tunnel closed: %v", err)
	}
	if got := readN(t, busyR, 1); got != "y" {
		t.Errorf("busy tunnel: got %q", got)
	}
}

// TestCloseUpgraded: the drain's last step closes open tunnels and refuses
// new ones.
func TestCloseUpgraded(t *testing.T) {
	eb := newEchoBackend(t, "")
	v := startVeer(t, fmt.Sprintf(upgradeRoute, eb.addr, eb.addr, "1h"))
	c1, br1, _ := dialUpgrade(t, v.addr, nil, "")
	c2, br2, _ := dialUpgrade(t, v.addr, nil, "")
	defer c1.Close()
	defer c2.Close()
	waitFor(t, "two tunnels", func() bool { return v.p.Upgraded() == 2 })
	if n := v.p.CloseUpgraded(); n != 2 {
		t.Errorf("CloseUpgraded: got %d, want 2", n)
	}
	for i, br := range []*bufio.Reader{br1, br2} {
		if _, err := br.ReadByte(); err == nil {
			t.Errorf("tunnel %d still open after CloseUpgraded", i+1)
		}
	}
	waitFor(t, "no tunnel", func() bool { return v.p.Upgraded() == 0 })
	_, _, h := dialUpgrade(t, v.addr, nil, "")
	if got := h.StatusCode(); got != 503 {
		t.Errorf("upgrade after CloseUpgraded: got %d, want 503", got)
	}
}

// TestAccessLogLines: every answered request, the 404 and the upgrade
// (when it closes) have their line with route, version, backend, status,
// bytes and request ID.
func TestAccessLogLines(t *testing.T) {
	blue := newBackend(t, "blue", nil)
	eb := newEchoBackend(t, "")
	v := startVeer(t, fmt.Sprintf(`
routes:
  - name: shop
    match: {host: shop.example.com}
    stable: blue
    versions:
      blue: {backends: [%q]}
      ws: {backends: [%q]}
    weights: {blue: 100, ws: 0}
`, blue.addr, eb.addr))
	var mu sync.Mutex
	var out bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	l, err := accesslog.New(accesslog.Options{Writer: w, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	v.p.AccessLog = l

	v.get(t, "/a?x=1", "X-Request-Id: req-1", "User-Agent: ua/1")
	roundTrip(t, v.addr, "GET /nowhere HTTP/1.1\nHost: other.example\n\n")
	c, _, _ := dialUpgrade(t, v.addr, []string{"X-Veer-Version: ws", "X-Request-Id: req-ws"}, "")
	io.WriteString(c, "12345")
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	waitFor(t, "the tunnel to end", func() bool { return v.p.Upgraded() == 0 })
	l.Close()

	mu.Lock()
	text := out.String()
	mu.Unlock()
	var lines []map[string]any
	for _, ln := range strings.Split(strings.TrimSpace(text), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("line is not JSON: %v\n%s", err, ln)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), text)
	}
	want := []map[string]any{
		{"method": "GET", "path": "/a?x=1", "status": 200.0, "bytes": 5.0, "route": "shop", "version": "blue", "backend": blue.addr, "request_id": "req-1", "user_agent": "ua/1", "client": "127.0.0.1", "host": "shop.example.com"},
		{"path": "/nowhere", "status": 404.0, "route": "", "version": "", "backend": "", "host": "other.example"},
		{"path": "/chat?room=1", "status": 101.0, "route": "shop", "version": "ws", "backend": eb.addr, "request_id": "req-ws", "bytes": 8.0}, // "12345" echoed and "bye"
	}
	for i, w := range want {
		for k, val := range w {
			if lines[i][k] != val {
				t.Errorf("line %d %s: got %#v, want %#v", i+1, k, lines[i][k], val)
			}
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestUpgradeToHTTPSBackend: a version whose backends are HTTPS gets its
// upgrades over TLS too, verified against its ca_file.
func TestUpgradeToHTTPSBackend(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "backend.test"},
		DNSNames: []string{"backend.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	eb := newEchoBackendOn(t, "secret", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	v := startVeer(t, fmt.Sprintf(`
routes:
  - name: shop
    match: {host: shop.example.com}
    versions:
      blue: {backends: [%q], tls: {enabled: true, ca_file: %q, server_name: backend.test}}
`, eb.addr, caFile))
	c, br, h := dialUpgrade(t, v.addr, nil, "")
	if got := h.StatusCode(); got != 101 {
		t.Fatalf("status: got %d, want 101", got)
	}
	if got := readN(t, br, 6); got != "secret" {
		t.Errorf("greeting over TLS: got %q", got)
	}
	io.WriteString(c, "ping")
	if got := readN(t, br, 4); got != "ping" {
		t.Errorf("echo over TLS: got %q", got)
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, _ := io.ReadAll(br); string(rest) != "bye" {
		t.Errorf("after the half-close over TLS: got %q, want bye", rest)
	}

	t.Run("untrusted backend", func(t *testing.T) {
		v := startVeer(t, fmt.Sprintf(`
routes:
  - name: shop
    match: {host: shop.example.com}
    versions:
      blue: {backends: [%q], tls: {enabled: true, server_name: backend.test}}
`, eb.addr))
		_, _, h := dialUpgrade(t, v.addr, nil, "")
		if got := h.StatusCode(); got != 502 {
			t.Errorf("status: got %d, want 502", got)
		}
		if got := v.metric(t, "veer_upstream_failures_total", "reason", "connect"); got < 1 {
			t.Errorf("veer_upstream_failures_total{connect}: got %v", got)
		}
	})
}
