// Package demo is `veer demo`: demo upstreams for blue, green and canary on
// loopback, veer in front of them from an embedded config, and synthetic
// traffic, so a newcomer sees a split and an automatic rollback in a minute.
//
// The story (demo.yaml): a stepped canary takes 10%, then 25%, then 50% of
// the shop route; FailAfter (20s) in, the canary starts failing FailRate
// (8%) of its requests; veer's rollback judge sees its error rate over the
// 15s window pass 5% and gives its traffic back to blue by itself, about
// 25 to 30 seconds after the start. Every event is printed as it happens.
//
// Everything stays on loopback: the upstreams, the proxy, the admin API
// and the synthetic traffic (which is bounded in rate, concurrency and
// duration).
package demo

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/app"
	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/events"
)

//go:embed demo.yaml
var demoYAML string

// Options configure the demo. The zero value is the story of `veer demo`.
type Options struct {
	Out       io.Writer // the story; default os.Stdout
	Log       *slog.Logger
	NoTraffic bool
	// FailAfter is when the canary starts failing (default 20s).
	FailAfter time.Duration
	// FailRate is the share of the canary's requests answered 500 once it
	// fails (default 0.08).
	FailRate float64
	// Rate is the synthetic traffic in requests per second (default 50).
	Rate int
	// ProxyAddr and AdminAddr default to free loopback ports; they must be
	// loopback addresses.
	ProxyAddr, AdminAddr string
	// Config replaces the embedded demo.yaml (tests shorten its timings).
	// BLUE, GREEN, CANARY, PROXY and ADMIN in it are replaced with the
	// addresses.
	Config string
}

// Defaults of Options.
const (
	DefaultFailAfter = 20 * time.Second
	DefaultFailRate  = 0.08
	DefaultRate      = 50
)

// maxInFlight bounds the synthetic traffic's concurrent requests; maxRun
// bounds how long it runs.
const (
	maxInFlight = 16
	maxRun      = time.Hour
)

// ErrNotLoopback is returned for a listen address off loopback.
var ErrNotLoopback = errors.New("demo: the demo listens on loopback only")

// Upstream is one demo backend: it answers with its version's name and can
// be told to fail a share of requests. Safe for concurrent use.
type Upstream struct {
	Version  string
	Addr     string
	failRate atomic.Uint64 // parts per million
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

// Close stops the upstream and closes its connections.
func (u *Upstream) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if u.srv.ShutdownWithContext(ctx) != nil {
		u.ln.Close()
	}
}

// Run runs the demo until ctx ends, then stops everything it started and
// returns (nil after a clean stop).
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.FailAfter == 0 {
		o.FailAfter = DefaultFailAfter
	}
	if o.FailRate == 0 {
		o.FailRate = DefaultFailRate
	}
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	if o.Config == "" {
		o.Config = demoYAML
	}
	for _, addr := range []string{o.ProxyAddr, o.AdminAddr} {
		if err := checkLoopback(addr); err != nil {
			return err
		}
	}

	ups := map[string]*Upstream{}
	defer func() {
		var wg sync.WaitGroup
		for _, u := range ups {
			wg.Go(u.Close)
		}
		wg.Wait()
	}()
	for _, v := range []string{"blue", "green", "canary"} {
		u, err := StartUpstream(v)
		if err != nil {
			return err
		}
		ups[v] = u
	}
	dir, err := os.MkdirTemp("", "veer-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	proxyLn, err := listen(o.ProxyAddr, "-listen")
	if err != nil {
		return err
	}
	adminLn, err := listen(o.AdminAddr, "-admin-listen")
	if err != nil {
		proxyLn.Close()
		return err
	}
	text := strings.NewReplacer("BLUE", ups["blue"].Addr, "GREEN", ups["green"].Addr, "CANARY", ups["canary"].Addr,
		"PROXY", proxyLn.Addr().String(), "ADMIN", adminLn.Addr().String()).Replace(o.Config)
	file := filepath.Join(dir, "veer.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		proxyLn.Close()
		adminLn.Close()
		return err
	}
	cfg, err := config.Load(file)
	if err != nil {
		proxyLn.Close()
		adminLn.Close()
		return fmt.Errorf("demo config: %w", err)
	}
	// The demo's own config file is in a temporary directory nobody edits.
	a, err := app.New(app.Options{Config: cfg, ProxyListener: proxyLn, AdminListener: adminLn, Log: o.Log, NoWatch: true})
	if err != nil {
		proxyLn.Close()
		adminLn.Close()
		return err
	}

	start := time.Now()
	st := &story{out: o.Out, start: start}
	proxyURL, adminURL := "http://"+a.ProxyAddr(), "http://"+a.AdminAddr()
	st.printf("veer demo\n\n  dashboard: %s/\n  proxy:     %s/\n  api:       %s/api/v1/routes\n  metrics:   %s/metrics\n\n", adminURL, proxyURL, adminURL, adminURL)
	if o.NoTraffic {
		st.printf("No synthetic traffic (-no-traffic): drive it yourself.\n")
	} else {
		st.printf("The story: a stepped canary takes 10%%, 25%%, then 50%% of the shop route while\n"+
			"%d requests/s of synthetic traffic (500 sticky users) flow through veer. After %s\n"+
			"the canary starts failing %.0f%% of its requests; veer sees its error rate pass\n"+
			"the limit and rolls it back to blue by itself. Open the dashboard to watch.\n\n", o.Rate, o.FailAfter, o.FailRate*100)
	}
	st.printf("Try:\n  curl -s %s/\n  curl -s -H 'X-Veer-Version: canary' %s/\n  VEER_ADMIN=%s veer status\n\nCtrl-C stops the demo.\n\n", proxyURL, proxyURL, adminURL)

	// Subscribe before the controller runs, so no event is missed.
	evs := a.Controller.Events()
	live, unsubscribe := evs.Subscribe()
	defer unsubscribe()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { st.events(runCtx, evs.List(), live, o.FailAfter, !o.NoTraffic) })
	if !o.NoTraffic {
		wg.Go(func() { traffic(runCtx, a.ProxyAddr(), o.Rate) })
		wg.Go(func() {
			t := time.NewTimer(o.FailAfter)
			defer t.Stop()
			select {
			case <-runCtx.Done():
			case <-t.C:
				ups["canary"].SetFailRate(o.FailRate)
				st.line("demo", "", fmt.Sprintf("the canary starts failing %.0f%% of its requests (a bad release)", o.FailRate*100))
			}
		})
	}
	err = a.Run(runCtx)
	cancel()
	wg.Wait()
	st.printf("\nveer demo stopped after %s.\n", time.Since(start).Round(time.Second))
	return err
}

// story prints the demo's lines. Safe for concurrent use.
type story struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
}

func (s *story) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.out, format, args...)
}

// line prints one timestamped line: wall clock, time since the start, the
// event's type and route, and its message.
func (s *story) line(typ, route, msg string) {
	now := time.Now()
	s.printf("%s %4s  %-9s %-5s %s\n", now.Format("15:04:05"), "+"+now.Sub(s.start).Round(time.Second).String(), typ, route, msg)
}

// events prints the kept events, then live ones as they happen, and after
// the first automatic rollback a few words on what happened and what to try.
func (s *story) events(ctx context.Context, kept []events.Event, live <-chan events.Event, failAfter time.Duration, explain bool) {
	var last uint64
	explained := false
	show := func(e events.Event) {
		if e.Seq <= last {
			return
		}
		last = e.Seq
		s.line(e.Type, e.Route, e.Message)
		if e.Type == "rollback" && explain && !explained && strings.Contains(e.Message, "canary") {
			explained = true
			since := time.Since(s.start).Round(time.Second)
			s.printf("\n  veer took the failing canary out of traffic by itself, %s after the start\n"+
				"  (%s after it went bad): no request goes to it now. It stays at 0%% until\n"+
				"  someone sets its weight again. Look at the dashboard, or try\n"+
				"    veer history shop      (the rollback is revision %s)\n"+
				"    veer undo shop         (puts the canary back, to see it rolled back again)\n\n",
				since, (since - failAfter.Round(time.Second)).Round(time.Second), revisionOf(e.Message))
		}
	}
	for _, e := range kept {
		show(e)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-live:
			if !ok {
				return
			}
			show(e)
		}
	}
}

// revisionOf finds N in an event message starting "revision N: ...".
func revisionOf(msg string) string {
	rest, ok := strings.CutPrefix(msg, "revision ")
	if !ok {
		return "shown in the event"
	}
	n, _, _ := strings.Cut(rest, ":")
	return n
}

func checkLoopback(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("demo: bad address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %q is not a loopback address (use 127.0.0.1:PORT; `veer serve` is for real use)", ErrNotLoopback, addr)
}

func listen(addr, flag string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w (is another veer running? %s 127.0.0.1:0 picks a free port)", err, flag)
	}
	return ln, nil
}

// traffic sends rate requests a second with sticky user IDs to the demo
// proxy on loopback, at most maxInFlight at a time (a tick with all of them
// busy is skipped) and for at most maxRun. It returns when ctx ends and its
// requests have finished.
func traffic(ctx context.Context, addr string, rate int) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: maxInFlight, MaxIdemponentCallAttempts: 1}
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInFlight)
	deadline := time.NewTimer(maxRun)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://shop.demo/")
			req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", rand.IntN(500)))
			_ = c.DoTimeout(req, resp, 2*time.Second)
		})
	}
}
