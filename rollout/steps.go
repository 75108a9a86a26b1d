package rollout

import (
	"fmt"
	"time"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/health"
	"github.com/veer-proxy/veer/notify"
	"github.com/veer-proxy/veer/router"
	"github.com/veer-proxy/veer/state"
)

func describeStep(s config.Step) string {
	switch {
	case s.SetWeight != nil:
		return "set_weight " + s.SetWeight.String()
	case s.Pause != nil && s.Pause.Indefinite:
		return "pause until resumed"
	case s.Pause != nil:
		return "pause " + s.Pause.Duration.String()
	case s.Analysis != nil:
		a := s.Analysis
		return fmt.Sprintf("analysis over %s (min %d requests, max error rate %s%%)", a.Window.D(), a.MinRequests, a.MaxErrorRate.String())
	}
	return "?"
}

func (c *Controller) stepAt(rc *config.Route, rs *state.Route) *config.Step {
	if rs.StepsDone || rs.Step >= len(rc.Steps) {
		return nil
	}
	return &rc.Steps[rs.Step]
}

func (c *Controller) nextStep(rs *state.Route, now time.Time) {
	rs.Step++
	rs.StepStarted, rs.PausedFor = now, 0
}

// step advances route r's stepped rollout as far as it can at now (like
// Argo Rollouts' canary steps). Caller holds c.mu.
func (c *Controller) step(r *router.Route, rs *state.Route, now time.Time) {
	rc := r.Config
	for i := 0; i < len(rc.Steps)+1; i++ { // bounded: each pass moves at most through every step once
		if len(rc.Steps) == 0 || rs.StepsDone || rs.Paused || rs.Frozen != "" || r.Candidate == nil {
			return
		}
		if rs.Step >= len(rc.Steps) {
			rs.StepsDone = true
			if _, err := c.promoteLocked(rc, rs, rc.Candidate, state.SourceStep, "rollout complete: promoted %s"); err != nil {
				c.o.Log.Error("rollout could not promote its candidate", "route", rc.Name, "err", err)
			}
			c.save()
			return
		}
		s := rc.Steps[rs.Step]
		label := fmt.Sprintf("step %d/%d", rs.Step+1, len(rc.Steps))
		switch {
		case s.SetWeight != nil:
			cur := rs.Current()
			cw := s.SetWeight.Float()
			w := map[string]float64{rc.Candidate: cw}
			if rc.Candidate != cur.Stable {
				w[cur.Stable] = float64(config.PercentScale-int(*s.SetWeight)) / 100
			}
			c.nextStep(rs, now)
			if !sameWeights(rc, cur.Weights, w) {
				if _, err := c.commit(rc, rs, w, cur.Stable, state.SourceStep, label+": "+describeStep(s), "step", rc.Candidate); err != nil {
					c.o.Log.Error("rollout step failed", "route", rc.Name, "err", err)
					return
				}
				// Refresh r: the commit published a new table.
				r = c.table.Route(rc.Name)
			} else {
				c.save()
			}
		case s.Pause != nil && s.Pause.Indefinite:
			rs.Paused, rs.PausedAt = true, now
			c.save()
			c.o.Events.Add(rc.Name, "step", label+": paused until `veer resume`")
			return
		case s.Pause != nil:
			if now.Sub(rs.StepStarted)-rs.PausedFor < s.Pause.Duration {
				return
			}
			c.nextStep(rs, now)
			c.save()
			c.o.Events.Add(rc.Name, "step", label+": pause of "+s.Pause.Duration.String()+" done")
		case s.Analysis != nil:
			a := s.Analysis
			if now.Sub(rs.StepStarted)-rs.PausedFor < a.Window.D() {
				return // a full window of traffic first
			}
			l := health.Limits{MaxErrorRate: a.MaxErrorRate.Float(), MinRequests: a.MinRequests, Window: a.Window.D(),
				MaxErrorRateIncrease: a.MaxErrorRateIncrease.Float(), MaxP99Ratio: a.MaxP99Ratio, MaxP99: a.MaxP99.D()}
			cand := r.Candidate.Window.Stats(now, l.Window)
			verdict := health.Judge(l, cand, r.Stable.Window.Stats(now, l.Window))
			if verdict.Fail {
				c.autoRollback(r, rs, rc.Candidate, "analysis", "analysis failed: "+verdict.Reason)
				return
			}
			if !verdict.Enough {
				return // too few requests: keep waiting, never pass
			}
			c.nextStep(rs, now)
			c.save()
			c.o.Events.Add(rc.Name, "step", fmt.Sprintf("%s: analysis passed (%d requests, error rate %.1f%%)", label, cand.Requests, cand.ErrorRate))
		}
	}
}

func (c *Controller) sendNote(route, event, version, reason string, rs *state.Route) {
	cur := rs.Current()
	c.o.Notifier.Send(notify.Message{Event: event, Route: route, Version: version, Before: cur.Weights, After: cur.Weights,
		Reason: reason, Revision: cur.Revision, Time: c.o.Now().UTC()})
}
