package e2e

// A tiny WebSocket (RFC 6455) client and echo server with raw frames, so
// that the tests need no WebSocket dependency.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// writeFrame writes one final frame; clients mask (RFC 6455 5.3).
func writeFrame(w io.Writer, op byte, payload []byte, mask bool) error {
	var hdr []byte
	hdr = append(hdr, 0x80|op)
	mbit := byte(0)
	if mask {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, mbit|byte(n))
	case n < 1<<16:
		hdr = append(hdr, mbit|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, mbit|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	body := payload
	if mask {
		var key [4]byte
		rand.Read(key[:])
		hdr = append(hdr, key[:]...)
		body = make([]byte, len(payload))
		for i := range payload {
			body[i] = payload[i] ^ key[i%4]
		}
	}
	_, err := w.Write(append(hdr, body...))
	return err
}

// readFrame reads one frame (unfragmented frames only, as both ends here
// send), unmasking it.
func readFrame(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 {
		return 0, nil, errors.New("fragmented frame")
	}
	op = h[0] & 0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	if n > 1<<24 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return op, payload, nil
}

// wsBackend answers plain requests with its name, like Backend, and
// WebSocket handshakes with an echo server that greets with its name.
type wsBackend struct {
	name     string
	addr     string
	upgrades atomic.Int64
	lastHdr  atomic.Value // http.Header of the last handshake
}

func newWSBackend(t *testing.T, name string) *wsBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &wsBackend{name: name, addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(b.serve)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *wsBackend) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		if r.URL.Path == "/slow" {
			time.Sleep(1500 * time.Millisecond)
		}
		io.WriteString(w, b.name+"\n")
		return
	}
	b.upgrades.Add(1)
	b.lastHdr.Store(r.Header.Clone())
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" || r.Header.Get("Sec-WebSocket-Version") != "13" {
		http.Error(w, "bad handshake", 400)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(key))
	writeFrame(brw, opText, []byte("hello from "+b.name), false)
	brw.Flush()
	for {
		op, payload, err := readFrame(brw.Reader)
		if err != nil {
			return
		}
		switch op {
		case opText, opBinary:
			writeFrame(c, op, payload, false)
		case opPing:
			writeFrame(c, opPong, payload, false)
		case opClose:
			writeFrame(c, opClose, payload, false)
			return // the server closes the TCP connection first (RFC 6455 7.1.1)
		}
	}
}

// wsConn is the client side of a WebSocket through veer.
type wsConn struct {
	c       net.Conn
	r       *bufio.Reader
	version string // X-Veer-Version of the handshake's answer
	header  http.Header
}

// dialWS opens a WebSocket to veer at addr, path, with headers (name,
// value pairs).
func dialWS(t *testing.T, addr, path string, headers ...string) *wsConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return handshakeWS(t, c, path, headers...)
}

// handshakeWS opens a WebSocket on c (plain or TLS).
func handshakeWS(t *testing.T, c net.Conn, path string, headers ...string) *wsConn {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	var k [16]byte
	rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: shop.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, key)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&req, "%s: %s\r\n", headers[i], headers[i+1])
	}
	req.WriteString("\r\n")
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("handshake answer: %v", err)
	}
	if resp.StatusCode != 101 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake: got %d %q, want 101", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		t.Fatalf("Sec-WebSocket-Accept: got %q, want %q", got, wsAccept(key))
	}
	return &wsConn{c: c, r: r, version: resp.Header.Get("X-Veer-Version"), header: resp.Header}
}

func (w *wsConn) send(t *testing.T, op byte, msg []byte) {
	t.Helper()
	if err := writeFrame(w.c, op, msg, true); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func (w *wsConn) recv(t *testing.T) (byte, []byte) {
	t.Helper()
	op, p, err := readFrame(w.r)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return op, p
}

// closeClean sends a close frame with 1000 and expects the server's close
// frame with the same code, then the end of the connection.
func (w *wsConn) closeClean(t *testing.T) {
	t.Helper()
	w.send(t, opClose, []byte{0x03, 0xe8})
	op, p := w.recv(t)
	if op != opClose || !bytes.Equal(p, []byte{0x03, 0xe8}) {
		t.Fatalf("closing handshake: got op %#x %v, want close 1000", op, p)
	}
	if n, err := w.r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the closing handshake: read %d bytes, %v; want EOF", n, err)
	}
}

const wsConfig = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
drain_timeout: 10s
routes:
  - name: shop
    match: {host: shop.example.com}
    stable: blue
    candidate: canary
    versions:
      blue:   {backends: [%[1]q]}
      canary: {backends: [%[2]q]}
    weights: {blue: 70, canary: 30}
    sticky: {header: X-User-ID}
  - name: idle
    match: {host: shop.example.com, path_prefix: /idle}
    versions:
      blue: {backends: [%[1]q]}
    timeouts: {upgrade_idle: 1s}
`

// stickyUser returns a user ID whose sticky bucket is on version.
func stickyUser(t *testing.T, v *Veer, version string) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("user-%d", i)
		if _, ver, _ := Get(t, v.ProxyURL()+"/", "Host", "shop.example.com", "X-User-ID", id); ver == version {
			return id
		}
	}
	t.Fatalf("no user on %s among 1000", version)
	return ""
}

// TestWebSocket: a sticky user's WebSocket reaches the version its HTTP
// requests go to (the canary), carries many messages both ways, of every
// length encoding, and closes cleanly; it is counted as a 1xx of the
// canary. An idle one is closed after upgrade_idle.
func TestWebSocket(t *testing.T) {
	blue, canary := newWSBackend(t, "blue"), newWSBackend(t, "canary")
	v := StartVeer(t, fmt.Sprintf(wsConfig, blue.addr, canary.addr))
	user := stickyUser(t, v, "canary")

	ws := dialWS(t, v.ProxyAddr, "/chat", "X-User-ID", user)
	if ws.version != "canary" || canary.upgrades.Load() != 1 || blue.upgrades.Load() != 0 {
		t.Fatalf("the sticky canary user's WebSocket went to %q (upgrades: canary %d, blue %d), want canary",
			ws.version, canary.upgrades.Load(), blue.upgrades.Load())
	}
	hdr := canary.lastHdr.Load().(http.Header)
	if hdr.Get("X-User-Id") != user || hdr.Get("X-Forwarded-For") == "" || hdr.Get("X-Request-Id") == "" {
		t.Errorf("the backend's handshake headers: %v", hdr)
	}
	if op, p := ws.recv(t); op != opText || string(p) != "hello from canary" {
		t.Fatalf("greeting: got %#x %q", op, p)
	}

	sizes := []int{0, 1, 125, 126, 127, 1000, 65535, 65536, 70000}
	const n = 500
	for i := 0; i < n; i++ {
		size := sizes[i%len(sizes)]
		if i%len(sizes) == 0 {
			size = i // and a spread of others
		}
		msg := make([]byte, size)
		rand.Read(msg)
		op := byte(opBinary)
		if i%2 == 0 {
			op, msg = opText, []byte(fmt.Sprintf("message %d %s", i, strings.Repeat("x", size)))
		}
		ws.send(t, op, msg)
		gotOp, got := ws.recv(t)
		if gotOp != op || !bytes.Equal(got, msg) {
			t.Fatalf("message %d (%d bytes): echoed op %#x, %d bytes, equal %v", i, len(msg), gotOp, len(got), bytes.Equal(got, msg))
		}
	}
	ws.send(t, opPing, []byte("ping"))
	if op, p := ws.recv(t); op != opPong || string(p) != "ping" {
		t.Errorf("ping: got %#x %q, want pong", op, p)
	}
	if got := metricValue(t, v.AdminURL(), "veer_upgraded_connections"); got != 1 {
		t.Errorf("veer_upgraded_connections while open: got %v, want 1", got)
	}
	ws.closeClean(t)
	Eventually(t, 5*time.Second, "veer_upgraded_connections to return to 0", func() bool {
		return metricValue(t, v.AdminURL(), "veer_upgraded_connections") == 0
	})
	if got := metricValue(t, v.AdminURL(), "veer_requests_total", "route=shop", "version=canary", "code=1xx"); got != 1 {
		t.Errorf("veer_requests_total{shop,canary,1xx}: got %v, want 1", got)
	}

	t.Run("override and a blue user", func(t *testing.T) {
		ws := dialWS(t, v.ProxyAddr, "/chat", "X-User-ID", user, "X-Veer-Version", "blue")
		if ws.version != "blue" {
			t.Errorf("override: served by %q, want blue", ws.version)
		}
		ws.recv(t)
		ws.closeClean(t)
		ws = dialWS(t, v.ProxyAddr, "/chat", "X-User-ID", stickyUser(t, v, "blue"))
		if ws.version != "blue" {
			t.Errorf("blue user: served by %q, want blue", ws.version)
		}
		ws.recv(t)
		ws.closeClean(t)
	})

	t.Run("idle timeout", func(t *testing.T) {
		ws := dialWS(t, v.ProxyAddr, "/idle")
		ws.recv(t) // greeting
		start := time.Now()
		ws.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := ws.r.ReadByte(); err == nil {
			t.Fatal("read a byte from an idle WebSocket")
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
			t.Errorf("idle WebSocket closed after %v, want about upgrade_idle (1s)", d)
		}
	})
}

// TestWebSocketDrain: on SIGTERM a WebSocket keeps working while ordinary
// in-flight requests finish, and is closed last, within drain_timeout.
func TestWebSocketDrain(t *testing.T) {
	blue, canary := newWSBackend(t, "blue"), newWSBackend(t, "canary")
	v := StartVeer(t, fmt.Sprintf(wsConfig, blue.addr, canary.addr))
	ws := dialWS(t, v.ProxyAddr, "/chat", "X-Veer-Version", "canary")
	ws.recv(t)

	slowDone := make(chan time.Time, 1)
	go func() {
		req, _ := http.NewRequest("GET", v.ProxyURL()+"/slow", nil)
		req.Host = "shop.example.com"
		req.Header.Set("X-Veer-Version", "blue")
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		if err != nil {
			t.Errorf("slow request during the drain: %v", err)
		}
		slowDone <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond) // the slow request is in flight
	sigterm := time.Now()
	v.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	ws.send(t, opText, []byte("still there?"))
	if op, p := ws.recv(t); op != opText || string(p) != "still there?" {
		t.Fatalf("during the drain: got %#x %q", op, p)
	}
	ws.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := ws.r.ReadByte()
	closed := time.Now()
	if err == nil {
		t.Fatal("read a byte after the drain, want the connection closed")
	}
	done := <-slowDone
	if closed.Before(done.Add(-50 * time.Millisecond)) {
		t.Errorf("the WebSocket closed %v before the in-flight request finished: upgrades must close last", done.Sub(closed))
	}
	if d := closed.Sub(sigterm); d > 10*time.Second {
		t.Errorf("the WebSocket closed %v after SIGTERM, beyond drain_timeout (10s)", d)
	}
	if code, ok := v.Wait(15 * time.Second); !ok || code != 0 {
		t.Fatalf("exit code %d (exited %v), want 0\n%s", code, ok, v.Log())
	}
	if !strings.Contains(v.Log(), "closed the upgraded connections") {
		t.Errorf("the drain did not log closing the upgraded connections:\n%s", v.Log())
	}
}

// TestWebSocketOverTLS: wss:// through veer's TLS listener, X-Forwarded-Proto
// https at the backend, and a clean close.
func TestWebSocketOverTLS(t *testing.T) {
	ca := newCA(t)
	canary := newWSBackend(t, "canary")
	dir := t.TempDir()
	ca.writePair(t, dir, "shop", "shop.example.com")
	v := startVeerWith(t, dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
tls:
  certificates: [{cert_file: shop.pem, key_file: shop-key.pem}]
routes:
  - name: shop
    versions:
      canary: {backends: [%q]}
`, canary.addr))
	c, err := tls.Dial("tcp", v.ProxyAddr, &tls.Config{RootCAs: ca.pool, ServerName: "shop.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ws := handshakeWS(t, c, "/chat")
	if op, p := ws.recv(t); op != opText || string(p) != "hello from canary" {
		t.Fatalf("greeting: got %#x %q", op, p)
	}
	for i := 0; i < 50; i++ {
		msg := []byte(strings.Repeat("s", i*100))
		ws.send(t, opBinary, msg)
		if _, got := ws.recv(t); !bytes.Equal(got, msg) {
			t.Fatalf("message %d: echo differs", i)
		}
	}
	if got := canary.lastHdr.Load().(http.Header).Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto at the backend: %q, want https", got)
	}
	ws.closeClean(t)
}
