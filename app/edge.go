package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/accesslog"
	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/proxy"
	"github.com/veer-proxy/veer/tlsterm"
)

// edge is what veer does at the edge besides proxying: TLS termination
// and its HTTP-to-HTTPS redirect listener, and the access log.
type edge struct {
	certs        *tlsterm.Store // nil without tls
	minVersion   uint16
	redirect     *fasthttp.Server
	redirectLn   net.Listener
	access       *accesslog.Logger // nil when access_log is off
	redirectDone chan struct{}     // closed when the redirect listener has shut down
}

// openEdge loads the certificates, opens the access log and the redirect
// listener, and counts open upgraded connections. It runs in New, after
// the proxy listener is open (the redirect names its port).
func (a *App) openEdge(cfg *config.Config) (err error) {
	e := &a.edge
	defer func() {
		if err != nil {
			a.closeEdgeResources()
		}
	}()
	warnInsecureUpstreams(a.o.Log, cfg)
	a.Metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "veer_upgraded_connections",
		Help: "Open upgraded connections (WebSockets) being tunnelled to backends."},
		func() float64 { return float64(a.Proxy.Upgraded()) }))
	if p := cfg.AccessLogPath(); p != "" {
		e.access, err = accesslog.New(accesslog.Options{Path: p, Format: cfg.AccessLog.Format,
			Registerer: a.Metrics.Registry, Log: a.o.Log})
		if err != nil {
			return err
		}
		a.Proxy.AccessLog = e.access
	}
	if cfg.TLS == nil {
		return nil
	}
	if e.minVersion, err = tlsterm.ParseVersion(cfg.TLS.MinVersion); err != nil {
		return err
	}
	if e.certs, err = tlsterm.New(cfg.Pairs(), tlsterm.Options{Log: a.o.Log, Registerer: a.Metrics.Registry}); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if cfg.TLS.RedirectHTTP != "" {
		port := strconv.Itoa(cfg.TLS.RedirectPort)
		if cfg.TLS.RedirectPort == 0 {
			_, port, _ = net.SplitHostPort(a.proxyLn.Addr().String())
		}
		if e.redirectLn, err = proxy.Listen(cfg.TLS.RedirectHTTP); err != nil {
			return fmt.Errorf("tls.redirect_http listener: %w", err)
		}
		e.redirect = &fasthttp.Server{
			Handler:               tlsterm.RedirectHandler(port),
			Name:                  "veer",
			NoDefaultServerHeader: true,
			ReadTimeout:           cfg.Limits.HeaderReadTimeout.D(),
			IdleTimeout:           cfg.Limits.ClientIdleTimeout.D(),
			ReadBufferSize:        cfg.Limits.MaxHeaderBytes,
			CloseOnShutdown:       true,
			Logger:                fasthttpDebug{a.o.Log},
		}
	}
	return nil
}

// closeEdgeResources closes what openEdge opened (New failed).
func (a *App) closeEdgeResources() {
	if a.edge.redirectLn != nil {
		a.edge.redirectLn.Close()
	}
	if a.edge.access != nil {
		a.edge.access.Close()
	}
}

// edgeListener wraps the proxy listener in TLS when tls is configured. The
// wrapping is outermost, so that fasthttp sees *tls.Conn and ctx.IsTLS()
// (X-Forwarded-Proto: https) holds.
func (a *App) edgeListener(ln net.Listener) net.Listener {
	if a.edge.certs == nil {
		return ln
	}
	return tls.NewListener(ln, a.edge.certs.Config(a.edge.minVersion))
}

// startEdge starts the certificate watcher and the redirect listener.
func (a *App) startEdge(bg context.Context, errc chan<- error) {
	e := &a.edge
	if e.certs != nil && !a.o.NoWatch {
		if err := e.certs.Watch(bg, 200*time.Millisecond); err != nil {
			a.o.Log.Warn("cannot watch the certificate files: reload them with SIGHUP", "err", err)
		}
	}
	if e.redirect != nil {
		go func() {
			if err := e.redirect.Serve(e.redirectLn); err != nil {
				errc <- fmt.Errorf("redirect listener: %w", err)
			}
		}()
	}
}

// servingAttrs are the edge's part of the "veer is serving" line.
func (a *App) servingAttrs() []any {
	var out []any
	if a.edge.certs != nil {
		out = append(out, "tls", true)
	}
	if a.edge.redirectLn != nil {
		out = append(out, "redirect_http", a.edge.redirectLn.Addr().String())
	}
	if a.edge.access != nil {
		out = append(out, "access_log", a.o.Config.AccessLog.Path)
	}
	return out
}

// RedirectAddr is the address of the HTTP-to-HTTPS redirect listener ("" without one).
func (a *App) RedirectAddr() string {
	if a.edge.redirectLn == nil {
		return ""
	}
	return a.edge.redirectLn.Addr().String()
}

// beginDrainEdge runs as the drain starts: the redirect listener stops
// taking connections with the proxy listener, so that nobody is sent to an
// https port that is closing.
func (a *App) beginDrainEdge(ctx context.Context) {
	if a.edge.redirect != nil {
		a.edge.redirectDone = make(chan struct{})
		go func() {
			defer close(a.edge.redirectDone)
			_ = a.edge.redirect.ShutdownWithContext(ctx)
		}()
	}
}

// drainEdge runs at the end of the drain, once ordinary requests are done:
// upgraded connections (which fasthttp's Shutdown does not track) are
// closed, last, and the access log is flushed and closed.
func (a *App) drainEdge(ctx context.Context) {
	e := &a.edge
	if e.redirectDone != nil {
		select {
		case <-e.redirectDone:
		case <-ctx.Done():
		}
	}
	if n := a.Proxy.CloseUpgraded(); n > 0 {
		a.o.Log.Info("drain: closed the upgraded connections (WebSockets) still open; their clients reconnect elsewhere", "connections", n)
		// Their goroutines write their access log lines as they end.
		for deadline := time.Now().Add(time.Second); a.Proxy.Upgraded() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if e.access != nil {
		e.access.Close()
	}
}

// reloadEdge applies a reloaded config's edge settings: the certificate
// list (tls on or off, min_version, redirect_http and access_log take
// effect on restart).
func (a *App) reloadEdge(old, cfg *config.Config) {
	warnInsecureUpstreams(a.o.Log, cfg)
	if a.edge.certs != nil && cfg.TLS != nil && !samePairs(old.Pairs(), cfg.Pairs()) {
		if err := a.edge.certs.SetPairs(cfg.Pairs()); err != nil {
			a.o.Log.Error("tls.certificates not applied: the previous certificates keep serving", "err", err)
		} else {
			a.o.Log.Info("tls.certificates reloaded", "certificates", len(cfg.TLS.Certificates))
		}
	}
	if (old.TLS == nil) != (cfg.TLS == nil) || old.TLS != nil && cfg.TLS != nil &&
		(old.TLS.MinVersion != cfg.TLS.MinVersion || old.TLS.RedirectHTTP != cfg.TLS.RedirectHTTP || old.TLS.RedirectPort != cfg.TLS.RedirectPort) ||
		old.AccessLog != cfg.AccessLog {
		a.o.Log.Warn("tls on or off, tls.min_version, tls.redirect_http, tls.redirect_port and access_log take effect on restart")
	}
}

// reloadCerts re-reads the certificate files (SIGHUP), keeping any pair
// that does not load.
func (a *App) reloadCerts() {
	if a.edge.certs != nil {
		_ = a.edge.certs.Reload() // logs what it kept and why
	}
}

// ReopenLogs reopens the access log file (SIGUSR1, after logrotate moved it).
func (a *App) ReopenLogs() {
	if a.edge.access != nil {
		a.edge.access.Reopen()
	}
}

func samePairs(a, b []tlsterm.Pair) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// warnInsecureUpstreams says, on every load, which versions skip verifying
// their backends' certificates: the setting is explicit, and loud.
func warnInsecureUpstreams(log *slog.Logger, cfg *config.Config) {
	for _, r := range cfg.Routes {
		for _, name := range r.VersionOrder {
			if r.Versions[name].TLS.InsecureSkipVerify {
				log.Warn("INSECURE: tls.insecure_skip_verify is on: veer does not verify these backends' certificates, so anyone on the network path can impersonate them; use tls.ca_file instead",
					"route", r.Name, "version", name)
			}
		}
	}
}

type fasthttpDebug struct{ log *slog.Logger }

func (f fasthttpDebug) Printf(format string, args ...any) {
	f.log.Debug("fasthttp", "msg", fmt.Sprintf(format, args...))
}
