package proxy

import (
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
)

// NewServer returns the fasthttp server for p with cfg's limits and
// timeouts: no path normalisation on the way through, no default Server,
// Content-Type or User-Agent headers added.
func NewServer(p *Proxy, cfg *config.Config, log *slog.Logger) *fasthttp.Server {
	l := cfg.Limits
	body := int(l.MaxBodyBytes)
	if body <= 0 {
		body = 1 << 30 // "unlimited": bounded by what one request may buffer
	}
	return &fasthttp.Server{
		Handler:                            p.Handler,
		Name:                               "veer",
		NoDefaultServerHeader:              true,
		NoDefaultContentType:               true,
		DisablePreParseMultipartForm:       true,
		ReadBufferSize:                     l.MaxHeaderBytes,
		ReadTimeout:                        l.HeaderReadTimeout.D(),
		IdleTimeout:                        l.ClientIdleTimeout.D(),
		MaxRequestBodySize:                 body,
		Concurrency:                        l.MaxConnections,
		CloseOnShutdown:                    true,
		Logger:                             fasthttpLogger{log},
		SleepWhenConcurrencyLimitsExceeded: 10 * time.Millisecond,
	}
}

type fasthttpLogger struct{ log *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.log.Debug("fasthttp", "msg", sprintf(format, args...))
}
