package rollout

import (
	"fmt"
	"maps"
	"math"
	"time"

	"github.com/veer-proxy/veer/router"
	"github.com/veer-proxy/veer/state"
)

// RouteView is SPEC's ROUTE, as the admin API and `veer status` show it.
type RouteView struct {
	Name       string                 `json:"name"`
	Match      MatchView              `json:"match"`
	Stable     string                 `json:"stable"`
	Candidate  string                 `json:"candidate,omitempty"`
	Revision   int                    `json:"revision"`
	Phase      string                 `json:"phase"`
	Weights    map[string]float64     `json:"weights"`
	Versions   map[string]VersionView `json:"versions"`
	Order      []string               `json:"version_order"`
	Window     string                 `json:"window"`
	Step       *StepView              `json:"step,omitempty"`
	RolledBack map[string]string      `json:"rolled_back,omitempty"`
	Frozen     string                 `json:"frozen,omitempty"`
	Previous   string                 `json:"previous_stable,omitempty"`
}

// MatchView is the route's match.
type MatchView struct {
	Host       string `json:"host,omitempty"`
	PathPrefix string `json:"path_prefix"`
}

// StepView is a stepped rollout's progress.
type StepView struct {
	Index   int    `json:"index"` // 0-based; == total when done
	Total   int    `json:"total"`
	Current string `json:"current,omitempty"`
	Paused  bool   `json:"paused"`
	Done    bool   `json:"done"`
}

// VersionView is one version's backends and figures over the rollback window.
type VersionView struct {
	Backends  []BackendView `json:"backends"`
	Requests  uint64        `json:"requests"`
	Errors    uint64        `json:"errors"`
	ErrorRate float64       `json:"error_rate"`
	P50ms     float64       `json:"p50_ms"`
	P99ms     float64       `json:"p99_ms"`
	Weight    float64       `json:"weight"`
}

// BackendView is one backend's health.
type BackendView struct {
	Address string `json:"address"`
	Healthy bool   `json:"healthy"`
	Ejected bool   `json:"ejected,omitempty"`
}

// Routes returns every route's view, in config order.
func (c *Controller) Routes() []RouteView {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.o.Now()
	out := make([]RouteView, 0, len(c.table.Routes))
	for _, r := range c.table.Routes {
		out = append(out, c.view(r, c.st.Routes[r.Name], now))
	}
	return out
}

// Route returns one route's view.
func (c *Controller) Route(name string) (RouteView, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.table.Route(name)
	if r == nil {
		return RouteView{}, fmt.Errorf("%w: no route %q", ErrNotFound, name)
	}
	return c.view(r, c.st.Routes[name], c.o.Now()), nil
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func (c *Controller) view(r *router.Route, rs *state.Route, now time.Time) RouteView {
	rc := r.Config
	cur := rs.Current()
	v := RouteView{
		Name: r.Name, Match: MatchView{Host: rc.Match.Host, PathPrefix: rc.Match.PathPrefix},
		Stable: cur.Stable, Candidate: rc.Candidate, Revision: cur.Revision, Weights: map[string]float64{},
		Versions: map[string]VersionView{}, Order: rc.VersionOrder, Window: rc.Rollback.Window.D().String(),
		RolledBack: maps.Clone(rs.RolledBack), Frozen: rs.Frozen, Previous: rs.PreviousStable,
	}
	ns := now.UnixNano()
	for _, ver := range r.Versions {
		s := ver.Window.Stats(now, rc.Rollback.Window.D())
		vv := VersionView{Requests: s.Requests, Errors: s.Errors, ErrorRate: math.Round(s.ErrorRate*100) / 100,
			P50ms: ms(s.P50), P99ms: ms(s.P99), Weight: ver.Weight.Float(), Backends: []BackendView{}}
		for _, b := range ver.Backends {
			vv.Backends = append(vv.Backends, BackendView{Address: b.Addr, Healthy: b.State.Available(ns), Ejected: b.State.Ejected(ns)})
		}
		v.Versions[ver.Name] = vv
		v.Weights[ver.Name] = ver.Weight.Float()
	}
	if n := len(rc.Steps); n > 0 {
		sv := &StepView{Index: rs.Step, Total: n, Paused: rs.Paused, Done: rs.StepsDone}
		if s := c.stepAt(rc, rs); s != nil {
			sv.Current = describeStep(*s)
		}
		v.Step = sv
	}
	v.Phase = phase(r, rs)
	return v
}

func phase(r *router.Route, rs *state.Route) string {
	switch {
	case rs.Paused || rs.Frozen != "":
		return PhasePaused
	case len(rs.RolledBack) > 0 && r.Stable.Weight == 10000:
		return PhaseRolledBack
	case len(r.Config.Steps) > 0 && !rs.StepsDone:
		return PhaseProgressing
	case r.Stable.Weight != 10000:
		return PhaseProgressing
	}
	return PhaseStable
}
