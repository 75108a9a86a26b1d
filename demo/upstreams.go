package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/valyala/fasthttp"
)

// UpstreamSpec is one demo backend of `veer demo -upstreams-only`: the
// version it answers as and its loopback address.
type UpstreamSpec struct {
	Version string
	Addr    string
}

// DefaultUpstreams are the ports example.yaml and docs/recipes use: two
// blue backends, one green, one canary.
var DefaultUpstreams = []UpstreamSpec{
	{"blue", "127.0.0.1:9001"},
	{"blue", "127.0.0.1:9002"},
	{"green", "127.0.0.1:9011"},
	{"canary", "127.0.0.1:9021"},
}

// UpstreamsOptions configure RunUpstreams.
type UpstreamsOptions struct {
	Out io.Writer // default os.Stdout
	// Upstreams to start, in order; default DefaultUpstreams. Addresses
	// must be loopback (port 0 picks a free one).
	Upstreams []UpstreamSpec
	// FailRate is, per version, the share of requests (0 to 1) its
	// upstreams answer 500 from the start.
	FailRate map[string]float64
	// Started, when set, receives the running upstreams once they all
	// listen (tests read their addresses).
	Started func([]*Upstream)
}

// StartUpstreamAt serves a demo version on addr, a loopback address.
func StartUpstreamAt(version, addr string) (*Upstream, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s upstream: %w (is another `veer demo` running?)", version, err)
	}
	u := &Upstream{Version: version, Addr: ln.Addr().String(), ln: ln}
	u.srv = &fasthttp.Server{Handler: u.handle, NoDefaultServerHeader: true}
	go u.srv.Serve(ln)
	return u, nil
}

// RunUpstreams is `veer demo -upstreams-only`: it starts the demo upstreams
// alone, prints them, and serves until ctx ends, so that `veer serve`
// can run any config (docs/recipes) in front of them. It returns nil after
// a clean stop.
func RunUpstreams(ctx context.Context, o UpstreamsOptions) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if len(o.Upstreams) == 0 {
		o.Upstreams = DefaultUpstreams
	}
	for v, r := range o.FailRate {
		if r < 0 || r > 1 {
			return fmt.Errorf("demo: fail rate of %s is %v, want 0 to 1", v, r)
		}
	}
	for _, s := range o.Upstreams {
		if err := checkLoopback(s.Addr); err != nil {
			return err
		}
	}
	var ups []*Upstream
	defer func() {
		var wg sync.WaitGroup
		for _, u := range ups {
			wg.Go(u.Close)
		}
		wg.Wait()
	}()
	for _, s := range o.Upstreams {
		u, err := StartUpstreamAt(s.Version, s.Addr)
		if err != nil {
			return err
		}
		u.SetFailRate(o.FailRate[s.Version])
		ups = append(ups, u)
	}
	fmt.Fprintf(o.Out, "veer demo upstreams\n\n")
	for _, u := range ups {
		note := ""
		if r := o.FailRate[u.Version]; r > 0 {
			note = fmt.Sprintf("  answers 500 to %g%% of requests", r*100)
		}
		fmt.Fprintf(o.Out, "  %-7s %s%s\n", u.Version, u.Addr, note)
	}
	fmt.Fprintf(o.Out, "\nEach answers \"hello from VERSION\" (and GET /healthz). Put veer in front of them:\n"+
		"  veer serve -config docs/recipes/canary-analysis.yaml\n\nCtrl-C stops them.\n")
	if o.Started != nil {
		o.Started(ups)
	}
	<-ctx.Done()
	fmt.Fprintf(o.Out, "\nveer demo upstreams stopped.\n")
	return nil
}
