package router

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/health"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/sock"
	"github.com/veer-proxy/veer/upstream"
)

// Registry keeps the state that must outlive a table swap, keyed by stable
// IDs (route/version, route/version/address): windows, backend health and
// metric children, as Caddy's hosts.go does. A reload that keeps a version
// keeps its window and counters. Upstream clients (connection pools) are
// keyed by address and client settings instead: routes that point at the
// same server with the same timeouts and TLS share one pool, as an nginx
// upstream block shared by many locations does. Safe for concurrent use.
type Registry struct {
	Metrics *metrics.Metrics

	mu       sync.Mutex
	windows  map[string]*health.Window
	vmetrics map[string]*metrics.Version
	mmetrics map[string]*metrics.Mirror
	states   map[string]*health.BackendState
	clients  map[clientID]*fasthttp.HostClient
}

// clientID is one connection pool: an address and the settings its
// client is built with.
type clientID struct {
	addr string
	key  clientKey
}

// NewRegistry returns an empty registry reporting to m.
func NewRegistry(m *metrics.Metrics) *Registry {
	return &Registry{
		Metrics:  m,
		windows:  map[string]*health.Window{},
		vmetrics: map[string]*metrics.Version{},
		mmetrics: map[string]*metrics.Mirror{},
		states:   map[string]*health.BackendState{},
		clients:  map[clientID]*fasthttp.HostClient{},
	}
}

// WindowSpan is how much history a route's windows keep: the rollback
// window and every analysis window.
func WindowSpan(rc *config.Route) time.Duration {
	span := rc.Rollback.Window.D()
	for _, s := range rc.Steps {
		if s.Analysis != nil && s.Analysis.Window.D() > span {
			span = s.Analysis.Window.D()
		}
	}
	return span
}

func (g *Registry) window(rc *config.Route, version string) *health.Window {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := rc.Name + "/" + version
	span := WindowSpan(rc)
	w := g.windows[key]
	if w == nil || w.Span() < span {
		w = health.NewWindow(span) // a longer window starts empty: documented in docs/config.md
		g.windows[key] = w
	}
	return w
}

func (g *Registry) versionMetrics(route, version string) *metrics.Version {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := route + "/" + version
	m := g.vmetrics[key]
	if m == nil {
		m = g.Metrics.Version(route, version)
		g.vmetrics[key] = m
	}
	return m
}

func (g *Registry) mirrorMetrics(route, version string) *metrics.Mirror {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := route + "/" + version
	m := g.mmetrics[key]
	if m == nil {
		m = g.Metrics.Mirror(route, version)
		g.mmetrics[key] = m
	}
	return m
}

func (g *Registry) backend(rc *config.Route, version string, vc *config.Version, addr string) (*health.BackendState, *fasthttp.HostClient, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := rc.Name + "/" + version + "/" + addr
	st := g.states[id]
	if st == nil {
		st = health.NewBackendState()
		g.states[id] = st
	}
	// The CA file's size and time are in the key, so that a reload after
	// the CA file changed builds a client that trusts the new one; the
	// client it replaces is closed by Retain once no table uses it.
	cid := clientID{addr, clientKey{rc.Timeouts, vc.TLS, fileStamp(vc.TLS.CAFile)}}
	c := g.clients[cid]
	if c == nil {
		var err error
		if c, err = newClient(addr, rc, vc); err != nil {
			return nil, nil, err
		}
		g.clients[cid] = c
	}
	return st, c, nil
}

// Retain forgets everything t does not use: windows, metric children and
// backend states of removed versions, and the clients no backend of t
// uses any more, whose connections are closed once idle.
func (g *Registry) Retain(t *Table) {
	keepV := map[string]bool{}
	keepB := map[string]bool{}
	keepC := map[*fasthttp.HostClient]bool{}
	for _, r := range t.Routes {
		for _, v := range r.Versions {
			keepV[r.Name+"/"+v.Name] = true
			for _, b := range v.Backends {
				keepB[r.Name+"/"+v.Name+"/"+b.Addr] = true
				keepC[b.Client] = true
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.windows {
		if !keepV[k] {
			delete(g.windows, k)
		}
	}
	for k := range g.vmetrics {
		if !keepV[k] {
			delete(g.vmetrics, k)
			route, version := splitKey(k)
			g.Metrics.Forget(route, version)
		}
	}
	for k := range g.states {
		if !keepB[k] {
			delete(g.states, k)
		}
	}
	for k, c := range g.clients {
		if !keepC[c] {
			delete(g.clients, k)
			// In-flight requests of the old table may still use it: close
			// its idle connections now and again once they are done.
			c.CloseIdleConnections()
			time.AfterFunc(time.Minute, c.CloseIdleConnections)
		}
	}
}

// Clients is how many upstream clients (connection pools) the registry
// holds.
func (g *Registry) Clients() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.clients)
}

// fileStamp is a file's size and modification time ("" without a file).
// clientKey is what a backend's client is built from; a comparable value,
// so that a reload of thousands of backends compares instead of formatting.
type clientKey struct {
	timeouts config.Timeouts
	tls      config.UpstreamTLS
	ca       string
}

func fileStamp(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d@%d", fi.Size(), fi.ModTime().UnixNano())
}

func splitKey(k string) (string, string) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return k, ""
}

// newClient builds the one HostClient of a backend, with a fixed Addr so
// that no request can make veer connect elsewhere.
func newClient(addr string, rc *config.Route, vc *config.Version) (*fasthttp.HostClient, error) {
	connect := rc.Timeouts.Connect.D()
	c := &fasthttp.HostClient{
		Addr:                      addr,
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
		MaxIdemponentCallAttempts: 1, // fasthttp's hidden retries would hide a canary's errors
		RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		MaxConns:                  16384,
		MaxConnWaitTimeout:        connect,
		MaxIdleConnDuration:       rc.Timeouts.Idle.D(),
		// The exchange itself is upstream.Transport's: the response-header
		// timeout (fasthttp's ReadTimeout would be one deadline for the whole
		// response, cutting long downloads), streamed bodies, strict framing.
		Transport: &upstream.Transport{ResponseHeader: rc.Timeouts.ResponseHeader.D()},
		Dial: func(a string) (net.Conn, error) {
			return sock.Dial(a, connect)
		},
	}
	if t := vc.TLS; t.Enabled || t.CAFile != "" || t.ServerName != "" || t.InsecureSkipVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // only when the config says so, and logged
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls.ca_file %s holds no PEM certificate", t.CAFile)
			}
			tc.RootCAs = pool
		}
		c.IsTLS, c.TLSConfig = true, tc
	}
	return c, nil
}
