package rollout

import (
	"context"
	"fmt"
	"time"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/health"
	"github.com/veer-proxy/veer/router"
	"github.com/veer-proxy/veer/state"
)

// JudgeInterval is how often Run evaluates every route: well inside SPEC's
// "within one second of the condition holding".
const JudgeInterval = 250 * time.Millisecond

// Run evaluates the rollback judge and the stepped rollouts every
// JudgeInterval until ctx ends. A panic in a pass is recovered, counted and
// logged, and the next pass runs.
func (c *Controller) Run(ctx context.Context) {
	tick := time.NewTicker(JudgeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			c.safeEvaluate()
		}
	}
}

func (c *Controller) safeEvaluate() {
	defer func() {
		if r := recover(); r != nil {
			c.o.Metrics.Panics.Inc()
			c.o.Log.Error("panic in the rollback judge: this is a bug in veer; the judge keeps running", "panic", r)
		}
	}()
	c.Evaluate(c.o.Now())
}

func limitsOf(rb config.Rollback) health.Limits {
	return health.Limits{
		MaxErrorRate:         rb.MaxErrorRate.Float(),
		MinRequests:          rb.MinRequests,
		Window:               rb.Window.D(),
		MaxErrorRateIncrease: rb.MaxErrorRateIncrease.Float(),
		MaxP99Ratio:          rb.MaxP99Ratio,
		MaxP99:               rb.MaxP99.D(),
	}
}

// Evaluate runs one pass at now: it judges every version but stable that has
// weight, rolls back (or freezes) what fails, updates the window gauges and
// advances stepped rollouts. Tests call it with an injected clock.
func (c *Controller) Evaluate(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.table.Routes {
		rc := r.Config
		rs := c.st.Routes[r.Name]
		if rs == nil {
			continue
		}
		l := limitsOf(rc.Rollback)
		stable := r.Stable.Window.Stats(now, l.Window)
		for _, v := range r.Versions {
			s := stable
			if v != r.Stable {
				s = v.Window.Stats(now, l.Window)
			}
			c.o.Metrics.WindowErrors.WithLabelValues(r.Name, v.Name).Set(s.ErrorRate)
			c.o.Metrics.WindowP99.WithLabelValues(r.Name, v.Name).Set(s.P99.Seconds())
			for _, b := range v.Backends {
				up := 0.0
				if b.State.Available(now.UnixNano()) {
					up = 1
				}
				c.o.Metrics.BackendHealthy.WithLabelValues(r.Name, v.Name, b.Addr).Set(up)
			}
			if v == r.Stable || v.Weight == 0 {
				continue
			}
			verdict := health.Judge(l, s, stable)
			if !verdict.Fail {
				continue
			}
			if rc.Rollback.Action == "freeze" {
				c.freeze(r, rs, v, verdict)
				continue
			}
			c.autoRollback(r, rs, v.Name, verdict.Kind, verdict.Reason)
		}
		c.step(r, rs, now)
	}
}

// autoRollback takes version out: its weight goes to stable. Caller holds c.mu.
func (c *Controller) autoRollback(r *router.Route, rs *state.Route, version, kind, reason string) {
	rc := r.Config
	cur := rs.Current()
	w := map[string]float64{}
	for k, x := range cur.Weights {
		w[k] = x
	}
	w[cur.Stable] += w[version]
	w[version] = 0
	w[cur.Stable] = float64(config.Percent(w[cur.Stable]*100+0.5)) / 100 // keep 0.01 resolution
	if rs.RolledBack == nil {
		rs.RolledBack = map[string]string{}
	}
	rs.RolledBack[version] = reason
	if len(rc.Steps) > 0 && !rs.StepsDone && version == rc.Candidate {
		rs.StepsDone, rs.Paused = true, false // the rollout is aborted
	}
	full := fmt.Sprintf("%s: %s", version, reason)
	if _, err := c.commit(rc, rs, w, cur.Stable, state.SourceAutoRollback, full, "rollback", version); err != nil {
		c.o.Log.Error("automatic rollback could not be applied", "route", r.Name, "version", version, "err", err)
		return
	}
	c.o.Metrics.Rollbacks.WithLabelValues(r.Name, version, kind).Inc()
	c.o.Log.Warn("automatic rollback: version taken out of traffic", "route", r.Name, "version", version, "reason", reason)
}

// freeze halts the rollout and alerts once, moving no traffic.
func (c *Controller) freeze(r *router.Route, rs *state.Route, v *router.Version, verdict health.Verdict) {
	key := r.Name + "/" + v.Name
	if c.frozen[key] {
		return
	}
	c.frozen[key] = true
	rs.Frozen = v.Name + ": " + verdict.Reason
	c.save()
	msg := fmt.Sprintf("rollout frozen, no traffic moved: %s: %s", v.Name, verdict.Reason)
	c.o.Events.Add(r.Name, "freeze", msg)
	if c.o.Notifier != nil {
		c.sendNote(r.Name, "freeze", v.Name, verdict.Reason, rs)
	}
	c.o.Log.Warn("rollback limit crossed with action freeze: rollout held, traffic unchanged", "route", r.Name, "version", v.Name, "reason", verdict.Reason)
}
