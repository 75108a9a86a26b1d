package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/veer-proxy/veer/sock"
)

// engines starts each engine on a free loopback port and returns its
// address by name.
func engines(t *testing.T) map[string]string {
	t.Helper()
	cache := &bodies{m: map[string][]byte{}}
	l, err := newLoop([]string{"127.0.0.1:0"}, cache)
	if err != nil {
		t.Fatal(err)
	}
	var addr string
	for _, p := range l.ports {
		if p != nil {
			addr = p.addr.String()
		}
	}
	go l.run() // blocks in epoll_wait for the rest of the test binary

	ln, err := sock.Listen("127.0.0.1:0", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s := fasthttpServer(new(int64), cache)
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown() })
	return map[string]string{"epoll": addr, "fasthttp": ln.Addr().String()}
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReaderSize(c, 1<<16)}
}

func (c *client) send(parts ...string) {
	c.t.Helper()
	for _, p := range parts {
		if _, err := io.WriteString(c.c, p); err != nil {
			c.t.Fatal(err)
		}
	}
}

// answer reads one answer and returns its status code, body and whether it
// says the connection closes.
func (c *client) answer() (int, string, bool) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("reading an answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading a body: %v", err)
	}
	if got := resp.Header.Get("Server"); got != "bench-upstream" {
		c.t.Errorf("Server: %q", got)
	}
	return resp.StatusCode, string(b), resp.Close
}

func (c *client) want(code int, body string) {
	c.t.Helper()
	gotCode, gotBody, _ := c.answer()
	if gotCode != code || gotBody != body {
		c.t.Fatalf("got %d %q, want %d %q", gotCode, short(gotBody), code, short(body))
	}
}

func short(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%s... (%d bytes)", s[:20], len(s))
	}
	return s
}

// closed reports whether the server closed the connection (EOF).
func (c *client) closed() bool {
	_ = c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.br.ReadByte()
	return err == io.EOF
}

const get = "GET / HTTP/1.1\r\nHost: u\r\n\r\n"

// TestEngines holds both engines to the same answers on the same
// conversations, the way proxies talk to the upstream in the harness.
func TestEngines(t *testing.T) {
	for name, addr := range engines(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("keep-alive", func(t *testing.T) {
				c := dial(t, addr)
				for range 3 {
					c.send(get)
					c.want(200, "hello, bench\n")
				}
			})
			t.Run("pipelined", func(t *testing.T) {
				c := dial(t, addr)
				c.send(get + "GET /size/20 HTTP/1.1\r\nHost: u\r\n\r\n" + get)
				c.want(200, "hello, bench\n")
				c.want(200, strings.Repeat("x", 20))
				c.want(200, "hello, bench\n")
			})
			t.Run("head byte by byte", func(t *testing.T) {
				c := dial(t, addr)
				req := "GET /size/3?q=1 HTTP/1.1\r\nHost: u\r\nX-A: b\r\n\r\n"
				for i := range len(req) {
					c.send(req[i : i+1])
				}
				c.want(200, "xxx")
			})
			t.Run("content-length body", func(t *testing.T) {
				c := dial(t, addr)
				body := strings.Repeat("b", 100000)
				c.send("POST / HTTP/1.1\r\nHost: u\r\ncontent-length: 100000\r\n\r\n", body[:7], body[7:50000], body[50000:]+get)
				c.want(200, "hello, bench\n")
				c.want(200, "hello, bench\n")
			})
			t.Run("path of a request whose body comes later", func(t *testing.T) {
				// The answer is made after the body's last read: the path
				// must survive the reads in between.
				c := dial(t, addr)
				c.send("POST /size/5 HTTP/1.1\r\nHost: u\r\nContent-Length: 40\r\n\r\n")
				time.Sleep(20 * time.Millisecond) // let the head be read on its own
				c.send(strings.Repeat("z", 40))
				c.want(200, "xxxxx")
			})
			t.Run("chunked body", func(t *testing.T) {
				c := dial(t, addr)
				c.send("POST / HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n",
					"5;ext=1\r\nhel", "lo\r\n1", "0\r\n", strings.Repeat("z", 16), "\r\n0\r\nX-Trailer: 1\r\n", "\r\n", get)
				c.want(200, "hello, bench\n")
				c.want(200, "hello, bench\n")
			})
			t.Run("large answers", func(t *testing.T) {
				// Five 1 MiB answers asked for at once do not fit the socket
				// buffers: the server has to wait until the client reads.
				c := dial(t, addr)
				req := "GET /size/1m HTTP/1.1\r\nHost: u\r\n\r\n"
				c.send(strings.Repeat(req, 5) + get)
				for range 5 {
					c.want(200, strings.Repeat("x", 1<<20))
				}
				c.want(200, "hello, bench\n")
			})
			t.Run("connection close", func(t *testing.T) {
				c := dial(t, addr)
				c.send("GET / HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n")
				if code, body, closing := c.answer(); code != 200 || body != "hello, bench\n" || !closing {
					t.Fatalf("got %d %q close=%v", code, body, closing)
				}
				if !c.closed() {
					t.Fatal("the connection stayed open after Connection: close")
				}
			})
			t.Run("HTTP/1.0", func(t *testing.T) {
				c := dial(t, addr)
				c.send("GET /healthz HTTP/1.0\r\n\r\n")
				c.want(200, "ok\n")
				if !c.closed() {
					t.Fatal("the connection stayed open after an HTTP/1.0 request without keep-alive")
				}
			})
			t.Run("bad size", func(t *testing.T) {
				c := dial(t, addr)
				c.send("GET /size/lots HTTP/1.1\r\nHost: u\r\n\r\n")
				c.want(400, "bad size\n")
			})
		})
	}
}

// TestCount checks that /__bench/count counts what the split check needs:
// every request but /healthz and /__bench/count.
func TestCount(t *testing.T) {
	for name, addr := range engines(t) {
		t.Run(name, func(t *testing.T) {
			c := dial(t, addr)
			c.send("GET /__bench/count HTTP/1.1\r\nHost: u\r\n\r\n")
			c.want(200, "0")
			c.send(get, "GET /healthz HTTP/1.1\r\nHost: u\r\n\r\n", "POST /x HTTP/1.1\r\nHost: u\r\nContent-Length: 2\r\n\r\nab", "GET /size/1k HTTP/1.1\r\nHost: u\r\n\r\n")
			c.want(200, "hello, bench\n")
			c.want(200, "ok\n")
			c.want(200, "hello, bench\n")
			c.want(200, strings.Repeat("x", 1024))
			c.send("GET /__bench/count HTTP/1.1\r\nHost: u\r\n\r\n")
			c.want(200, "3")
		})
	}
}

// TestLoopBadInput: what a proxy would never send gets an error answer and
// the connection closes, and the engine goes on serving others.
func TestLoopBadInput(t *testing.T) {
	addr := engines(t)["epoll"]
	for _, tc := range []struct{ name, in, status string }{
		{"no version", "GET /\r\n\r\n", "400"},
		{"bad content-length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "400"},
		{"header without colon", "GET / HTTP/1.1\r\nHost u\r\n\r\n", "400"},
		{"bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"},
		{"head too long", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxHead), "431"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tc.in)
			code, _, closing := c.answer()
			if fmt.Sprint(code) != tc.status || !closing {
				t.Fatalf("got %d close=%v, want %s and close", code, closing, tc.status)
			}
			if !c.closed() {
				t.Fatal("the connection stayed open")
			}
		})
	}
	c := dial(t, addr)
	c.send(get)
	c.want(200, "hello, bench\n")
}
