// Package demo is `veer demo`: demo upstreams for blue, green and canary on
// loopback, veer in front of them from an embedded config, and synthetic
// traffic, so a newcomer sees a split and an automatic rollback in a minute.
package demo

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/app"
	"github.com/veer-proxy/veer/config"
)

//go:embed demo.yaml
var demoYAML string

// Options configure the demo.
type Options struct {
	Out       io.Writer
	Log       *slog.Logger
	NoTraffic bool
	// FailAfter is when the canary starts failing (default 20s).
	FailAfter time.Duration
	// FailRate is the share of the canary's requests answered 500 once it
	// fails (default 0.08).
	FailRate float64
	// ProxyAddr and AdminAddr default to free loopback ports.
	ProxyAddr, AdminAddr string
}

// Upstream is one demo backend: it answers with its version's name and can
// be told to fail a share of requests.
type Upstream struct {
	Version  string
	Addr     string
	failRate atomic.Uint64 // math.Float64bits
	srv      *fasthttp.Server
	ln       net.Listener
}

// StartUpstream serves a demo version on a free loopback port.
func StartUpstream(version string) (*Upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &Upstream{Version: version, Addr: ln.Addr().String(), ln: ln}
	u.srv = &fasthttp.Server{Handler: u.handle, NoDefaultServerHeader: true}
	go u.srv.Serve(ln)
	return u, nil
}

// SetFailRate makes the upstream answer 500 to that share of requests.
func (u *Upstream) SetFailRate(r float64) { u.failRate.Store(uint64(r * 1e6)) }

func (u *Upstream) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == "/healthz" {
		ctx.SetBodyString("ok\n")
		return
	}
	time.Sleep(time.Duration(2+rand.IntN(8)) * time.Millisecond)
	if r := float64(u.failRate.Load()) / 1e6; r > 0 && rand.Float64() < r {
		ctx.SetStatusCode(500)
		fmt.Fprintf(ctx, "%s failed\n", u.Version)
		return
	}
	fmt.Fprintf(ctx, "hello from %s\n", u.Version)
}

// Close stops the upstream.
func (u *Upstream) Close() { u.srv.Shutdown() }

// Run runs the demo until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.FailAfter == 0 {
		o.FailAfter = 20 * time.Second
	}
	if o.FailRate == 0 {
		o.FailRate = 0.08
	}
	ups := map[string]*Upstream{}
	for _, v := range []string{"blue", "green", "canary"} {
		u, err := StartUpstream(v)
		if err != nil {
			return err
		}
		defer u.Close()
		ups[v] = u
	}
	dir, err := os.MkdirTemp("", "veer-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	proxyLn, err := listen(o.ProxyAddr)
	if err != nil {
		return err
	}
	adminLn, err := listen(o.AdminAddr)
	if err != nil {
		return err
	}
	text := strings.NewReplacer("BLUE", ups["blue"].Addr, "GREEN", ups["green"].Addr, "CANARY", ups["canary"].Addr,
		"PROXY", proxyLn.Addr().String(), "ADMIN", adminLn.Addr().String()).Replace(demoYAML)
	file := filepath.Join(dir, "veer.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(file)
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	a, err := app.New(app.Options{Config: cfg, ProxyListener: proxyLn, AdminListener: adminLn, Log: o.Log})
	if err != nil {
		return err
	}
	proxyURL, adminURL := "http://"+a.ProxyAddr(), "http://"+a.AdminAddr()
	fmt.Fprintf(o.Out, "veer demo\n  proxy:     %s\n  dashboard: %s/\n  api:       %s/api/v1/routes\n  metrics:   %s/metrics\n\n", proxyURL, adminURL, adminURL, adminURL)
	fmt.Fprintf(o.Out, "Try:\n  curl -s %s/\n  curl -s -H 'X-Veer-Version: canary' %s/\n  VEER_ADMIN=%s veer status\n\n", proxyURL, proxyURL, adminURL)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go printEvents(runCtx, a, o.Out)
	if !o.NoTraffic {
		go traffic(runCtx, a.ProxyAddr())
		go func() {
			select {
			case <-runCtx.Done():
			case <-time.After(o.FailAfter):
				fmt.Fprintf(o.Out, "%s  demo: the canary starts failing %.0f%% of its requests\n", time.Now().Format("15:04:05"), o.FailRate*100)
				ups["canary"].SetFailRate(o.FailRate)
			}
		}()
	}
	return a.Run(ctx)
}

func listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return net.Listen("tcp", addr)
}

func printEvents(ctx context.Context, a *app.App, out io.Writer) {
	ch, stop := a.Controller.Events().Subscribe()
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprintf(out, "%s  %-9s %-5s %s\n", e.Time.Local().Format("15:04:05"), e.Type, e.Route, e.Message)
		}
	}
}

// traffic sends a bounded stream of requests with sticky user IDs to the
// demo proxy on loopback: about 50 requests a second, for at most an hour.
func traffic(ctx context.Context, addr string) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 8}
	deadline := time.Now().Add(time.Hour)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		go func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://shop.demo/")
			req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", rand.IntN(500)))
			_ = c.DoTimeout(req, resp, 5*time.Second)
		}()
	}
}
