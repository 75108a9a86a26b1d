// Package app wires veer's parts into a running server: the proxy listener,
// the admin listener, the rollout controller and its judge, webhooks and
// config reloads. cmd/veer and `veer demo` both run it.
package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/admin"
	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/events"
	"github.com/veer-proxy/veer/health"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/notify"
	"github.com/veer-proxy/veer/proxy"
	"github.com/veer-proxy/veer/rollout"
	"github.com/veer-proxy/veer/router"
)

// Options configure an App.
type Options struct {
	Config *config.Config // loaded and valid
	// ProxyListener and AdminListener, when set, are used instead of
	// listening on the config's addresses (the demo and tests use :0).
	ProxyListener net.Listener
	AdminListener net.Listener
	Log           *slog.Logger
	Now           func() time.Time
	// NoWatch turns off watching the config file (SIGHUP still reloads).
	NoWatch bool
}

// App is a running veer. Safe for concurrent use.
type App struct {
	o          Options
	Metrics    *metrics.Metrics
	Controller *rollout.Controller
	Proxy      *proxy.Proxy
	notifier   *notify.Notifier
	prober     *health.Prober
	server     *fasthttp.Server
	adminSrv   *http.Server
	proxyLn    net.Listener
	adminLn    net.Listener
	draining   atomic.Bool
	reloadMu   sync.Mutex
	lastSum    [32]byte
	edge       edge // TLS, the redirect listener, the access log (edge.go)
}

// New builds an App and opens its listeners, ready for Run.
func New(o Options) (*App, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cfg := o.Config
	a := &App{o: o, Metrics: metrics.New()}
	a.notifier = notify.New(hooks(cfg), notify.Options{Logger: o.Log, Registerer: a.Metrics.Registry})
	a.Proxy = proxy.New(nil, a.Metrics, o.Log)
	ev := events.New(1000, o.Now)
	a.prober = health.NewProber(o.Log, func(id string, up bool) {
		route, rest, _ := strings.Cut(id, "/")
		if up {
			ev.Add(route, "backend-up", rest+" passes its health check again and takes traffic")
			o.Log.Info("backend up: it takes traffic again", "backend", id)
		} else {
			ev.Add(route, "backend-down", rest+" failed its health check and takes no traffic")
			o.Log.Warn("backend down: it takes no traffic until its health check passes", "backend", id)
		}
	}, a.Metrics.Panics.Inc)
	ctrl, err := rollout.New(rollout.Options{
		Config:    cfg,
		StateFile: cfg.ResolvePath(cfg.StateFile),
		Registry:  router.NewRegistry(a.Metrics),
		Metrics:   a.Metrics,
		Events:    ev,
		Notifier:  a.notifier,
		Log:       o.Log,
		Now:       o.Now,
		Publish:   a.publish,
	})
	if err != nil {
		return nil, err
	}
	a.Controller = ctrl
	a.Proxy.OnEject = func(b *router.Backend, until time.Time) {
		r := b.Version.Route
		ctrl.Events().Add(r.Name, "backend-down", fmt.Sprintf("%s/%s backend %s ejected until %s after consecutive failures",
			r.Name, b.Version.Name, b.Addr, until.UTC().Format(time.RFC3339)))
	}
	if data, err := os.ReadFile(cfg.File); err == nil {
		a.lastSum = sha256.Sum256(data)
	}

	token := ""
	if cfg.Admin.TokenFile != "" {
		if token, err = config.ReadToken(cfg.ResolvePath(cfg.Admin.TokenFile)); err != nil {
			return nil, err
		}
	} else if !config.IsLoopback(cfg.Admin.Listen) && o.AdminListener == nil {
		return nil, fmt.Errorf("admin.listen %s is not loopback and no admin.token_file is set: refusing to expose the admin API without a token", cfg.Admin.Listen)
	}
	a.server = proxy.NewServer(a.Proxy, cfg, o.Log)
	a.adminSrv = &http.Server{
		Handler: admin.New(admin.Options{Controller: ctrl, Metrics: a.Metrics, Token: token,
			RateLimit: cfg.Admin.RateLimit, Ready: func() bool { return !a.draining.Load() }, Log: o.Log}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if a.proxyLn = o.ProxyListener; a.proxyLn == nil {
		if a.proxyLn, err = proxy.Listen(cfg.Listen); err != nil {
			return nil, fmt.Errorf("proxy listener: %w", err)
		}
	}
	if a.adminLn = o.AdminListener; a.adminLn == nil {
		if a.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			a.proxyLn.Close()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	if err := a.openEdge(cfg); err != nil {
		a.proxyLn.Close()
		a.adminLn.Close()
		return nil, err
	}
	return a, nil
}

// publish serves a new routing table and probes its backends.
func (a *App) publish(t *router.Table) {
	a.Proxy.Store(t)
	var targets []health.Target
	for _, r := range t.Routes {
		hc := r.Config.HealthCheck
		for _, v := range r.Versions {
			for _, b := range v.Backends {
				if hc.Path == "" {
					if !b.State.Up() {
						b.State.SetUp(true) // health checks were turned off for this route
					}
					continue
				}
				targets = append(targets, health.Target{ID: r.Name + "/" + v.Name + "/" + b.Addr, Addr: b.Addr,
					Path: hc.Path, Interval: hc.Interval.D(), Timeout: hc.Timeout.D(), Healthy: hc.Healthy,
					Unhealthy: hc.Unhealthy, TLS: b.Client.TLSConfig, State: b.State})
			}
		}
	}
	a.prober.Set(targets)
}

func hooks(cfg *config.Config) []notify.Webhook {
	var out []notify.Webhook
	for _, w := range cfg.Notify.Webhooks {
		out = append(out, notify.Webhook{URL: w.URL, Events: w.Events})
	}
	return out
}

// ProxyAddr is the proxy listener's address.
func (a *App) ProxyAddr() string { return a.proxyLn.Addr().String() }

// AdminAddr is the admin listener's address.
func (a *App) AdminAddr() string { return a.adminLn.Addr().String() }

// Run serves until ctx ends, then drains: /readyz turns false, the
// listeners close, in-flight requests finish (up to drain_timeout), and
// keep-alive clients are told Connection: close.
func (a *App) Run(ctx context.Context) error {
	bg, stop := context.WithCancel(context.Background())
	defer stop()
	go a.Controller.Run(bg)
	go a.notifier.Run(bg)
	if !a.o.NoWatch && a.o.Config.File != "" {
		if err := config.Watch(bg, a.o.Config.File, 200*time.Millisecond, a.o.Log, func() { a.Reload() }); err != nil {
			a.o.Log.Warn("cannot watch the config file: reload with SIGHUP", "err", err)
		}
	}
	errc := make(chan error, 3)
	a.startEdge(bg, errc)
	proxyLn := a.edgeListener(a.proxyLn)
	go func() { errc <- a.server.Serve(proxyLn) }()
	go func() {
		if err := a.adminSrv.Serve(a.adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	a.o.Log.Info("veer is serving", append([]any{"proxy", a.ProxyAddr(), "admin", a.AdminAddr(), "routes", len(a.o.Config.Routes)}, a.servingAttrs()...)...)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	return a.shutdown()
}

func (a *App) shutdown() error {
	a.draining.Store(true)
	cfg := a.Controller.Config()
	a.o.Log.Info("draining: no new connections; finishing in-flight requests", "timeout", cfg.DrainTimeout.D())
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout.D())
	defer cancel()
	a.beginDrainEdge(dctx)
	err := a.server.ShutdownWithContext(dctx)
	a.drainEdge(dctx)
	a.prober.Stop()
	actx, acancel := context.WithTimeout(context.Background(), time.Second)
	defer acancel()
	_ = a.adminSrv.Shutdown(actx)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if err != nil {
		a.o.Log.Warn("drain timeout reached: remaining connections were closed")
	}
	return nil
}

// Reload re-reads the config file (SIGHUP and the watcher call it). An
// invalid file changes nothing; an unchanged file is skipped.
func (a *App) Reload() {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.reloadCerts()
	file := a.o.Config.File
	data, err := os.ReadFile(file)
	if err != nil {
		a.Controller.ReloadFailed(&config.Problem{File: file, Msg: "cannot read config: " + err.Error()})
		return
	}
	sum := sha256.Sum256(data)
	if bytes.Equal(sum[:], a.lastSum[:]) {
		return
	}
	cfg, err := config.Parse(file, data)
	if err != nil {
		a.lastSum = sum // the same broken content is reported once
		a.Controller.ReloadFailed(err)
		return
	}
	old := a.Controller.Config()
	if err := a.Controller.Reload(cfg); err != nil {
		return
	}
	a.lastSum = sum
	a.notifier.SetHooks(hooks(cfg))
	a.reloadEdge(old, cfg)
	if cfg.Listen != old.Listen || cfg.Admin.Listen != old.Admin.Listen || cfg.Limits != old.Limits {
		a.o.Log.Warn("listen addresses and limits take effect on restart; the rest of the new config is live")
	}
}
