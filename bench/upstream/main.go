// Command upstream is the bench harness's fast origin: an HTTP/1.1 server
// on one or more loopback ports that answers every request from memory, so
// that the proxy in front of it, not the origin, is what a run measures.
//
// Paths: /size/N answers N bytes (N may end in k or m); anything else
// answers a 13-byte body. A POST body is read and dropped. /healthz answers
// 200 and is not counted. /__bench/count answers the number of other
// requests this port has served since it started, as a decimal number,
// which is how the harness checks the blue/canary split.
//
// Two engines serve the same answers. The default, epoll, is an event loop
// of its own (loop_linux.go): wrk and the upstream share one CPU in the
// harness, and what they spend per request caps every proxy alike, so the
// upstream spends as little as it can. -engine fasthttp is a fasthttp
// server on sock's listener, as the harness used before.
//
// Usage: upstream -listen 127.0.0.1:9001,127.0.0.1:9002 [-engine epoll|fasthttp]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/sock"
)

var small = []byte("hello, bench\n")

// bodies caches the /size/N answers; safe for concurrent use.
type bodies struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func (b *bodies) get(spec []byte) ([]byte, bool) {
	b.mu.RLock()
	body, ok := b.m[string(spec)]
	b.mu.RUnlock()
	if ok {
		return body, true
	}
	n, err := parseSize(string(spec))
	if err != nil || n > 64<<20 {
		return nil, false
	}
	body = bytes.Repeat([]byte("x"), n)
	b.mu.Lock()
	b.m[string(spec)] = body
	b.mu.Unlock()
	return body, true
}

func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

var (
	pathHealth = []byte("/healthz")
	pathCount  = []byte("/__bench/count")
	pathSize   = []byte("/size/")
)

// respond is the answer to a request for path on a port that has counted
// *count requests: its status code and body. It counts the request unless
// it is for /healthz or /__bench/count.
func respond(path []byte, count *int64, cache *bodies) (code int, body []byte) {
	switch {
	case bytes.Equal(path, pathHealth):
		return fasthttp.StatusOK, okBody
	case bytes.Equal(path, pathCount):
		return fasthttp.StatusOK, strconv.AppendInt(nil, atomic.LoadInt64(count), 10)
	}
	atomic.AddInt64(count, 1)
	if bytes.HasPrefix(path, pathSize) {
		body, ok := cache.get(path[len(pathSize):])
		if !ok {
			return fasthttp.StatusBadRequest, badSize
		}
		return fasthttp.StatusOK, body
	}
	return fasthttp.StatusOK, small
}

var (
	okBody  = []byte("ok\n")
	badSize = []byte("bad size\n")
)

// handler is the fasthttp engine's handler for one port.
func handler(count *int64, cache *bodies) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if sc, ok := ctx.Conn().(*sock.ServerConn); ok && !ctx.Request.Header.ConnectionClose() {
			sc.Hold() // the answer is whole, and the body (if any) read
		}
		code, body := respond(ctx.Path(), count, cache)
		ctx.SetStatusCode(code)
		ctx.SetBody(body)
	}
}

func fasthttpServer(count *int64, cache *bodies) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      handler(count, cache),
		Name:                         "bench-upstream",
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		MaxRequestBodySize:           64 << 20,
		ReadBufferSize:               16 << 10,
	}
}

// serveFasthttp runs the fasthttp engine on addrs; it returns only on
// failure.
func serveFasthttp(addrs []string, cache *bodies) error {
	errc := make(chan error, len(addrs))
	for _, addr := range addrs {
		// sock's listener, as veer's: an answer goes out with the wait for
		// the next request, one system call fewer per request.
		ln, err := sock.Listen(addr, 50*time.Millisecond)
		if err != nil {
			return err
		}
		s := fasthttpServer(new(int64), cache)
		go func() { errc <- s.Serve(ln) }()
	}
	fmt.Fprintln(os.Stdout, "ready")
	return <-errc
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "comma-separated `ADDRS` to serve on")
	engine := flag.String("engine", "epoll", "`ENGINE` that serves: epoll (an event loop of its own, Linux) or fasthttp")
	flag.Parse()
	cache := &bodies{m: map[string][]byte{}}
	addrs := strings.Split(*listen, ",")
	var err error
	switch *engine {
	case "epoll":
		err = serveLoop(addrs, cache, func(*loop) { fmt.Fprintln(os.Stdout, "ready") })
	case "fasthttp":
		err = serveFasthttp(addrs, cache)
	default:
		err = fmt.Errorf("-engine %q: want epoll or fasthttp", *engine)
	}
	log.Fatalf("upstream: %v", err)
}
