package health

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Target is one backend to probe actively.
type Target struct {
	ID        string // stable identity: route/version/address
	Addr      string
	Path      string
	Interval  time.Duration
	Timeout   time.Duration
	Healthy   int // consecutive successes to mark a down backend up
	Unhealthy int // consecutive failures to mark an up backend down
	TLS       *tls.Config
	State     *BackendState
}

// Prober runs an HTTP GET of each target's Path every Interval, and
// flips its BackendState after Healthy/Unhealthy consecutive results (like
// nginx plus's and Envoy's active health checks). A 2xx or 3xx answer within
// Timeout is healthy. Safe for concurrent use.
type Prober struct {
	log      *slog.Logger
	onChange func(id string, up bool)
	panics   func()

	mu      sync.Mutex
	running map[string]*probe
}

type probe struct {
	t      Target
	cancel context.CancelFunc
}

// NewProber returns a prober that reports verdict changes to onChange and
// recovered panics to panics (both may be nil).
func NewProber(log *slog.Logger, onChange func(id string, up bool), panics func()) *Prober {
	return &Prober{log: log, onChange: onChange, panics: panics, running: map[string]*probe{}}
}

// Set makes targets the probed set: new targets start, removed ones stop,
// changed ones restart. A backend whose route no longer checks health is
// marked up by the caller (Release).
func (p *Prober) Set(targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[string]Target{}
	for _, t := range targets {
		want[t.ID] = t
	}
	for id, r := range p.running {
		t, ok := want[id]
		if !ok || !same(t, r.t) {
			r.cancel()
			delete(p.running, id)
		}
	}
	for id, t := range want {
		if _, ok := p.running[id]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.running[id] = &probe{t: t, cancel: cancel}
		go p.loop(ctx, t)
	}
}

func same(a, b Target) bool {
	return a.Addr == b.Addr && a.Path == b.Path && a.Interval == b.Interval && a.Timeout == b.Timeout &&
		a.Healthy == b.Healthy && a.Unhealthy == b.Unhealthy && a.State == b.State && a.TLS == b.TLS
}

// Stop stops every probe.
func (p *Prober) Stop() { p.Set(nil) }

func (p *Prober) loop(ctx context.Context, t Target) {
	defer func() {
		if r := recover(); r != nil {
			if p.panics != nil {
				p.panics()
			}
			p.log.Error("panic in a health check: this is a bug in veer; the backend is no longer probed", "backend", t.ID, "panic", r)
		}
	}()
	c := &fasthttp.HostClient{Addr: t.Addr, IsTLS: t.TLS != nil, TLSConfig: t.TLS, MaxConns: 1,
		NoDefaultUserAgentHeader: true, MaxIdemponentCallAttempts: 1, ReadTimeout: t.Timeout, WriteTimeout: t.Timeout}
	defer c.CloseIdleConnections()
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	for {
		ok := check(c, t)
		if changed, up := t.State.Probe(ok, t.Healthy, t.Unhealthy); changed && p.onChange != nil {
			p.onChange(t.ID, up)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func check(c *fasthttp.HostClient, t Target) bool {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(t.Path)
	req.Header.SetHost(t.Addr)
	req.Header.Set("User-Agent", "veer-health-check")
	if err := c.DoTimeout(req, resp, t.Timeout); err != nil {
		return false
	}
	code := resp.StatusCode()
	return code >= 200 && code < 400
}
