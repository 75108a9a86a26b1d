package health

import (
	"context"
	"crypto/tls"
	"log/slog"
	"slices"
	"strings"
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

// probeKey is what one probe is: targets that share it (routes pointing
// at the same address with the same health_check) share one probe, so
// that 1,000 routes over the same two servers probe each server once per
// interval, not 1,000 times.
type probeKey struct {
	addr, path         string
	interval, timeout  time.Duration
	healthy, unhealthy int
	tls                *tls.Config
}

func (t *Target) key() probeKey {
	return probeKey{t.Addr, t.Path, t.Interval, t.Timeout, t.Healthy, t.Unhealthy, t.TLS}
}

// Prober runs an HTTP GET of each target's Path every Interval, and
// flips its BackendState after Healthy/Unhealthy consecutive results (like
// nginx plus's and Envoy's active health checks). A 2xx or 3xx answer within
// Timeout is healthy. Targets with the same address and settings share
// one probe, whose result counts for each of them. Safe for concurrent use.
type Prober struct {
	log      *slog.Logger
	onChange func(id string, up bool)
	panics   func()

	mu      sync.Mutex
	running map[probeKey]*probe
}

type probe struct {
	members []Target // sorted by ID
	cancel  context.CancelFunc
}

// NewProber returns a prober that reports verdict changes to onChange and
// recovered panics to panics (both may be nil).
func NewProber(log *slog.Logger, onChange func(id string, up bool), panics func()) *Prober {
	return &Prober{log: log, onChange: onChange, panics: panics, running: map[probeKey]*probe{}}
}

// Set makes targets the probed set: new probes start, removed ones stop,
// and a probe whose targets changed restarts. A backend whose route no
// longer checks health is marked up by the caller.
func (p *Prober) Set(targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[probeKey][]Target{}
	for _, t := range targets {
		k := t.key()
		want[k] = append(want[k], t)
	}
	for _, m := range want {
		slices.SortFunc(m, func(a, b Target) int { return strings.Compare(a.ID, b.ID) })
	}
	for k, r := range p.running {
		if m, ok := want[k]; !ok || !sameMembers(m, r.members) {
			r.cancel()
			delete(p.running, k)
		}
	}
	for k, m := range want {
		if _, ok := p.running[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.running[k] = &probe{members: m, cancel: cancel}
		go p.loop(ctx, k, m)
	}
}

// Probes is how many probes run (one per address and settings).
func (p *Prober) Probes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.running)
}

func sameMembers(a, b []Target) bool {
	return slices.EqualFunc(a, b, func(x, y Target) bool { return x.ID == y.ID && x.State == y.State })
}

// Stop stops every probe.
func (p *Prober) Stop() { p.Set(nil) }

func (p *Prober) loop(ctx context.Context, k probeKey, members []Target) {
	defer func() {
		if r := recover(); r != nil {
			if p.panics != nil {
				p.panics()
			}
			p.log.Error("panic in a health check: this is a bug in veer; the backend is no longer probed", "backend", k.addr, "panic", r)
		}
	}()
	c := &fasthttp.HostClient{Addr: k.addr, IsTLS: k.tls != nil, TLSConfig: k.tls, MaxConns: 1,
		NoDefaultUserAgentHeader: true, MaxIdemponentCallAttempts: 1, ReadTimeout: k.timeout, WriteTimeout: k.timeout}
	defer c.CloseIdleConnections()
	tick := time.NewTicker(k.interval)
	defer tick.Stop()
	for {
		ok := check(c, k)
		for _, t := range members {
			if changed, up := t.State.Probe(ok, k.healthy, k.unhealthy); changed && p.onChange != nil {
				p.onChange(t.ID, up)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func check(c *fasthttp.HostClient, t probeKey) bool {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(t.path)
	req.Header.SetHost(t.addr)
	req.Header.Set("User-Agent", "veer-health-check")
	if err := c.DoTimeout(req, resp, t.timeout); err != nil {
		return false
	}
	code := resp.StatusCode()
	return code >= 200 && code < 400
}
