package proxy

import (
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/sock"
)

// NewServer returns the fasthttp server for p with cfg's limits and
// timeouts, and gives p those limits (call it before serving): no path
// normalisation on the way through, no default Server, Content-Type or
// User-Agent headers added.
//
// Timeouts: a request head must arrive whole within header_read_timeout of
// the connection opening or of its first byte (ReadTimeout; the slowloris
// guard: 408 and closed); once the handler runs, a streamed body only has
// to make progress within client_idle_timeout (limits.go), so a long
// upload is not cut. A keep-alive connection idle for client_idle_timeout
// is closed (IdleTimeout), and so is one whose client stops reading the
// response for as long (WriteTimeout, pushed forward per chunk while a
// body streams).
//
// Limits: the read buffer holds max_header_bytes of header fields plus a
// request line with a max_uri_bytes target; Handler answers 414 and 431
// past the exact limits, errorHandler when the buffer overflows.
// max_connections is fasthttp's Concurrency: the connection over it is
// answered 503 and closed.
func NewServer(p *Proxy, cfg *config.Config, log *slog.Logger) *fasthttp.Server {
	l := cfg.Limits
	p.limits = limitsOrDefault(l)
	return &fasthttp.Server{
		Handler:                            p.Handler,
		ErrorHandler:                       p.errorHandler,
		ExpectHandler:                      p.expectHandler,
		HeaderReceived:                     p.headerReceived,
		Name:                               "veer",
		NoDefaultServerHeader:              true,
		NoDefaultContentType:               true,
		DisablePreParseMultipartForm:       true,
		StreamRequestBody:                  true,
		ReadBufferSize:                     p.limits.MaxHeaderBytes + p.limits.MaxURIBytes + requestLineSlack,
		ReadTimeout:                        l.HeaderReadTimeout.D(),
		IdleTimeout:                        l.ClientIdleTimeout.D(),
		WriteTimeout:                       l.ClientIdleTimeout.D(),
		Concurrency:                        l.MaxConnections,
		CloseOnShutdown:                    true,
		Logger:                             fasthttpLogger{log},
		SleepWhenConcurrencyLimitsExceeded: 10 * time.Millisecond,
		// The server reads the clock for ctx.Time only when asked: the
		// handler does with access logging on (and keeps its own start).
		LazyRequestTime: true,
	}
}

// requestLineSlack is the room in the read buffer for a request line's
// method and version around its target.
const requestLineSlack = 64

type fasthttpLogger struct{ log *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.log.Debug("fasthttp", "msg", sprintf(format, args...))
}

// Listen opens the proxy's TCP listener (sock.Listen): no TCP keep-alive
// probes on accepted connections, and a complete response goes out with
// the wait for the next request (Handler marks it with Hold), patient for
// holdPatience before it looks for a request that came early.
func Listen(addr string) (net.Listener, error) {
	return sock.Listen(addr, holdPatience)
}

// holdPatience bounds the extra wait of a pipelined request that arrives
// while the one before it is being answered (sock.ServerConn): past it,
// the connection is read as usual.
const holdPatience = 50 * time.Millisecond
