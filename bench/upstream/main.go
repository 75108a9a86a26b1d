// Command upstream is the bench harness's fast origin: a fasthttp server
// on one or more loopback ports that answers every request from memory, so
// that the proxy in front of it, not the origin, is what a run measures.
//
// Paths: /size/N answers N bytes (N may end in k or m); anything else
// answers a 13-byte body. A POST body is read and dropped. /healthz answers
// 200 and is not counted. /__bench/count answers the number of other
// requests this port has served since it started, as a decimal number,
// which is how the harness checks the blue/canary split.
//
// Usage: upstream -listen 127.0.0.1:9001,127.0.0.1:9002
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

func handler(count *atomic.Int64, cache *bodies) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if sc, ok := ctx.Conn().(*sock.ServerConn); ok && !ctx.Request.Header.ConnectionClose() {
			sc.Hold() // the answer is whole, and the body (if any) read
		}
		p := ctx.Path()
		switch {
		case bytes.Equal(p, pathHealth):
			ctx.SetBodyString("ok\n")
			return
		case bytes.Equal(p, pathCount):
			ctx.SetBodyString(strconv.FormatInt(count.Load(), 10))
			return
		}
		count.Add(1)
		if bytes.HasPrefix(p, pathSize) {
			body, ok := cache.get(p[len(pathSize):])
			if !ok {
				ctx.Error("bad size\n", fasthttp.StatusBadRequest)
				return
			}
			ctx.SetBody(body)
			return
		}
		ctx.SetBody(small)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "comma-separated `ADDRS` to serve on")
	flag.Parse()
	cache := &bodies{m: map[string][]byte{}}
	errc := make(chan error, 1)
	for _, addr := range strings.Split(*listen, ",") {
		// sock's listener, as veer's: an answer goes out with the wait for
		// the next request, one system call fewer per request on the CPU
		// the upstream shares with wrk, for every proxy alike.
		ln, err := sock.Listen(addr, 50*time.Millisecond)
		if err != nil {
			log.Fatalf("upstream: %v", err)
		}
		s := &fasthttp.Server{
			Handler:                      handler(new(atomic.Int64), cache),
			Name:                         "bench-upstream",
			NoDefaultDate:                true,
			NoDefaultContentType:         true,
			DisablePreParseMultipartForm: true,
			MaxRequestBodySize:           64 << 20,
			ReadBufferSize:               16 << 10,
		}
		go func() { errc <- s.Serve(ln) }()
	}
	fmt.Fprintln(os.Stdout, "ready")
	log.Fatalf("upstream: %v", <-errc)
}
