// Package admin is veer's admin listener: the JSON API of SPEC ("Admin
// API"), /metrics, the health endpoints and the dashboard, on stdlib
// net/http with no framework.
//
// Every /api/ request passes, in this order: a per-client rate limit
// (token bucket, golang.org/x/time/rate, keyed by client IP; 429 with
// Retry-After), the browser cross-origin check of net/http
// (CrossOriginProtection: a web page cannot make a browser POST to the API;
// 403), a Host check when no token is configured (a DNS-rebinding page
// cannot reach a loopback API through its own host name; 403), and the
// bearer token when one is configured (401 with WWW-Authenticate: Bearer).
// /metrics, /healthz, /readyz and the dashboard page are not limited and
// need no token: the page itself holds no data, it calls the API.
//
// Answers are JSON. Errors are {"error": "message"}: 400 for a bad body,
// an unknown version or weights that do not total 100 (also for a body over
// 1 MiB), 401, 403 (see above), 404 for an unknown route, revision or path
// under /api/, 405 for a wrong method (with Allow), 409 for a conflict
// (pausing a route with no stepped rollout, undoing to the current
// revision), 429, and 500 for a bug (a panic is recovered, logged and
// counted in veer_panics_total).
//
// Extensions of SPEC: GET /api/v1/events takes ?route=NAME and ?limit=N
// (the newest N); the event stream sends each event's seq as its SSE id and
// honours Last-Event-ID on reconnection; GET /dashboard/... serves the
// dashboard's static files.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/rollout"
)

// Options wires the admin handler.
type Options struct {
	Controller *rollout.Controller
	Metrics    *metrics.Metrics
	Token      string  // "" = no token required
	RateLimit  float64 // per client requests per second (burst twice that); 0 = default 20
	Ready      func() bool
	Log        *slog.Logger
	// Heartbeat is how often the event stream sends a comment to keep
	// proxies and load balancers from closing an idle stream; 0 = 15s.
	Heartbeat time.Duration
	// Now is the rate limiter's clock; nil = time.Now. Tests inject it.
	Now func() time.Time
}

// DefaultRateLimit is the per-client limit of the API in requests per
// second when Options.RateLimit is 0.
const DefaultRateLimit = 20

// maxBody bounds a request body.
const maxBody = 1 << 20

//go:embed dashboard
var dashboardFiles embed.FS

// server holds the handler's wiring. Its fields are set by New and never
// written again, so it is safe for concurrent use.
type server struct {
	o        Options
	ctrl     *rollout.Controller
	log      *slog.Logger
	limit    *limiter
	tokenSum [sha256.Size]byte
	cop      *http.CrossOriginProtection
	dash     fs.FS
}

// New returns the admin handler. It is safe for concurrent use, holds no
// goroutine of its own (an event stream's goroutine is its request's) and
// needs no Close.
func New(o Options) http.Handler {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	rps := o.RateLimit
	if rps <= 0 {
		rps = DefaultRateLimit
	}
	s := &server{o: o, ctrl: o.Controller, log: o.Log, limit: newLimiter(rps, o.Now)}
	if o.Token != "" {
		s.tokenSum = sha256.Sum256([]byte(o.Token))
	}
	s.cop = http.NewCrossOriginProtection()
	dash, err := fs.Sub(dashboardFiles, "dashboard")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory: a bug
	}
	s.dash = dash

	api := http.NewServeMux()
	api.Handle("/api/v1/routes", only(http.MethodGet, s.listRoutes))
	api.Handle("/api/v1/routes/{name}", only(http.MethodGet, s.getRoute))
	api.Handle("/api/v1/routes/{name}/weights", only(http.MethodPut, s.setWeights))
	api.Handle("/api/v1/routes/{name}/switch", only(http.MethodPost, s.switchVersion))
	api.Handle("/api/v1/routes/{name}/promote", only(http.MethodPost, s.promote))
	api.Handle("/api/v1/routes/{name}/rollback", only(http.MethodPost, s.rollback))
	api.Handle("/api/v1/routes/{name}/pause", only(http.MethodPost, s.pause))
	api.Handle("/api/v1/routes/{name}/resume", only(http.MethodPost, s.resume))
	api.Handle("/api/v1/routes/{name}/history", only(http.MethodGet, s.history))
	api.Handle("/api/v1/routes/{name}/undo", only(http.MethodPost, s.undo))
	api.Handle("/api/v1/events", only(http.MethodGet, s.listEvents))
	api.Handle("/api/v1/events/stream", only(http.MethodGet, s.streamEvents))
	api.Handle("/api/v1/config", only(http.MethodGet, s.configInfo))
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})

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
	mux.Handle("/api/", s.guard(api))
	mux.HandleFunc("GET /{$}", s.dashboardIndex)
	mux.Handle("GET /dashboard/", s.dashboardHeaders(http.StripPrefix("/dashboard/", http.FileServerFS(dash))))
	return s.recoverPanics(mux)
}

// only answers 405 with Allow and a JSON error to any method but method
// (and HEAD, where method is GET).
func only(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			allow := method
			if method == http.MethodGet {
				allow = "GET, HEAD"
			}
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on "+r.URL.Path+"; use "+method)
			return
		}
		h(w, r)
	})
}

// guard applies the rate limit, the cross-origin and Host checks and the
// token to an /api/ request.
func (s *server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := s.limit.allow(clientIP(r)); !ok {
			secs := int((wait + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			writeError(w, http.StatusTooManyRequests, "too many requests from "+clientIP(r)+": retry in "+strconv.Itoa(max(secs, 1))+"s")
			return
		}
		if err := s.cop.Check(r); err != nil {
			writeError(w, http.StatusForbidden, "cross-origin request refused: the admin API does not take changes from web pages of other origins")
			return
		}
		if s.o.Token == "" {
			if !safeHost(r.Host) {
				writeError(w, http.StatusForbidden, "host "+strconv.Quote(r.Host)+" refused: without admin.token_file the API answers only to an IP address or localhost (DNS-rebinding guard)")
				return
			}
		} else if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="veer"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid bearer token: send Authorization: Bearer TOKEN (the CLI reads $VEER_ADMIN_TOKEN)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorized checks the bearer token in constant time. Both sides are
// hashed first so that neither the content nor the length of the token
// leaks through timing.
func (s *server) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], s.tokenSum[:]) == 1
}

// safeHost reports whether a Host header names an IP address or localhost:
// what a loopback admin listener is reached by, and what a DNS-rebinding
// page (which must use its own host name) cannot send.
func safeHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") || strings.EqualFold(host, "localhost.") {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// clientIP is the address the request came from (the TCP peer; the admin
// API does not believe X-Forwarded-For).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return host
}

// who names the client in revisions and events.
func who(r *http.Request) string { return "admin API client " + clientIP(r) }

// trackWriter remembers whether the answer has started, so that a panic
// after it did is not followed by a second, garbled answer.
type trackWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackWriter) WriteHeader(code int) {
	if code >= 200 {
		t.wrote = true
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes of the
// event stream).
func (t *trackWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// recoverPanics turns a panic in a handler into a 500 JSON error, logs it
// with its stack and counts it. A panic after the answer started aborts the
// connection, so the client sees a truncated answer rather than a whole one.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			if s.o.Metrics != nil {
				s.o.Metrics.Panics.Inc()
			}
			s.log.Error("panic in an admin API handler: this is a bug in veer; the request got a 500 and veer keeps running",
				"method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			if tw.wrote {
				panic(http.ErrAbortHandler)
			}
			writeError(tw, http.StatusInternalServerError, "internal error: this is a bug in veer, see its log")
		}()
		next.ServeHTTP(tw, r)
	})
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client left
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

// statusOf maps an error of the rollout controller to an HTTP status and a
// message without the sentinel's prefix.
func statusOf(err error) (int, string) {
	for _, m := range []struct {
		sentinel error
		status   int
	}{
		{rollout.ErrNotFound, http.StatusNotFound},
		{rollout.ErrInvalid, http.StatusBadRequest},
		{rollout.ErrConflict, http.StatusConflict},
	} {
		if errors.Is(err, m.sentinel) {
			return m.status, strings.Replace(err.Error(), m.sentinel.Error()+": ", "", 1)
		}
	}
	var re *requestError
	if errors.As(err, &re) {
		return re.status, re.msg
	}
	return http.StatusInternalServerError, "internal error: " + err.Error()
}

// fail answers err with its status.
func (s *server) fail(w http.ResponseWriter, err error) {
	status, msg := statusOf(err)
	if status == http.StatusInternalServerError {
		s.log.Error("admin API request failed", "err", err)
	}
	writeError(w, status, msg)
}
