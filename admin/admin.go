// Package admin is veer's admin listener: the JSON API of SPEC, /metrics,
// health endpoints and the dashboard, on stdlib net/http.
package admin

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/rollout"
)

// Options wires the admin handler.
type Options struct {
	Controller *rollout.Controller
	Metrics    *metrics.Metrics
	Token      string  // "" = no token required
	RateLimit  float64 // per client requests per second; 0 = default 20
	Ready      func() bool
	Log        *slog.Logger
}

// New returns the admin handler. Safe for concurrent use.
func New(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.Ready != nil && !o.Ready() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}
