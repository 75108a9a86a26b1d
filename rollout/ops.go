package rollout

import (
	"fmt"
	"maps"
	"time"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/state"
)

// Result is the outcome of a change: the route's current revision, and
// whether this call made it (false when the change was already in effect).
type Result struct {
	Revision state.Revision `json:"revision"`
	Changed  bool           `json:"changed"`
}

// SetWeights sets a route's weights (versions left out get 0); they must
// total 100 with at most two decimals. who names the client for the audit.
func (c *Controller) SetWeights(route string, weights map[string]float64, who string) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, rs, err := c.route(route)
	if err != nil {
		return Result{}, err
	}
	w, err := checkWeights(rc, weights)
	if err != nil {
		return Result{}, err
	}
	cur := rs.Current()
	if sameWeights(rc, cur.Weights, w) {
		return Result{Revision: cur}, nil
	}
	for v, x := range w { // setting a version's weight again lifts its rollback
		if x > 0 {
			delete(rs.RolledBack, v)
		}
	}
	rs.Frozen = ""
	rev, err := c.commit(rc, rs, w, cur.Stable, state.SourceAdmin, "weights set by "+who, "weights", "")
	return Result{Revision: rev, Changed: err == nil}, err
}

func checkWeights(rc *config.Route, weights map[string]float64) (map[string]float64, error) {
	if len(weights) == 0 {
		return nil, fmt.Errorf("%w: weights are required, e.g. {\"weights\": {\"blue\": 90, \"canary\": 10}}", ErrInvalid)
	}
	total := 0
	out := map[string]float64{}
	for _, v := range sortedVersions(weights) {
		if _, ok := rc.Versions[v]; !ok {
			return nil, fmt.Errorf("%w: route %s has no version %q", ErrInvalid, rc.Name, v)
		}
		p, err := config.PercentFromFloat(weights[v])
		if err != nil {
			return nil, fmt.Errorf("%w: weight of %s: %v", ErrInvalid, v, err)
		}
		total += int(p)
		out[v] = p.Float()
	}
	if total != config.PercentScale {
		return nil, fmt.Errorf("%w: weights total %s, they must total 100", ErrInvalid, config.Percent(total))
	}
	return out, nil
}

func sameWeights(rc *config.Route, a, b map[string]float64) bool {
	for _, v := range rc.VersionOrder {
		if a[v] != b[v] {
			return false
		}
	}
	return true
}

func (c *Controller) version(rc *config.Route, v string) error {
	if _, ok := rc.Versions[v]; !ok {
		return fmt.Errorf("%w: route %s has no version %q", ErrInvalid, rc.Name, v)
	}
	return nil
}

// drainOthers starts the drain of cookie sessions of every version that had
// weight and now has none (switch and promote only, never rollback).
func (c *Controller) drainOthers(rc *config.Route, rs *state.Route, before map[string]float64, keep string) {
	d := rc.Sticky.Drain.D()
	if d <= 0 || rc.Sticky.Cookie == "" {
		return
	}
	if rs.Drain == nil {
		rs.Drain = map[string]time.Time{}
	}
	until := c.o.Now().Add(d)
	for v, w := range before {
		if v != keep && w > 0 {
			rs.Drain[v] = until
		}
	}
}

// Switch is the instant blue-green switch: 100% to version. The stable
// version stays the rollback target until a promote.
func (c *Controller) Switch(route, version, who string) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, rs, err := c.route(route)
	if err != nil {
		return Result{}, err
	}
	if err := c.version(rc, version); err != nil {
		return Result{}, err
	}
	cur := rs.Current()
	w := map[string]float64{version: 100}
	if sameWeights(rc, cur.Weights, w) {
		return Result{Revision: cur}, nil
	}
	c.drainOthers(rc, rs, cur.Weights, version)
	delete(rs.RolledBack, version)
	rs.Frozen = ""
	if version != cur.Stable {
		rs.PreviousStable = cur.Stable
	}
	rev, err := c.commit(rc, rs, w, cur.Stable, state.SourceAdmin, fmt.Sprintf("switch to %s by %s", version, who), "switch", version)
	return Result{Revision: rev, Changed: err == nil}, err
}

// Promote makes version the stable one at 100% and ends any stepped
// rollout. With version "", the non-stable version with the most weight
// (else the route's candidate) is promoted.
func (c *Controller) Promote(route, version, who string) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, rs, err := c.route(route)
	if err != nil {
		return Result{}, err
	}
	return c.promoteLocked(rc, rs, version, state.SourceAdmin, "promote %s by "+who)
}

func (c *Controller) promoteLocked(rc *config.Route, rs *state.Route, version, source, reasonFmt string) (Result, error) {
	cur := rs.Current()
	if version == "" {
		best := 0.0
		for _, v := range rc.VersionOrder {
			if v != cur.Stable && cur.Weights[v] > best {
				version, best = v, cur.Weights[v]
			}
		}
		if version == "" {
			return Result{}, fmt.Errorf("%w: nothing to promote: no version but stable %s has weight; name one", ErrConflict, cur.Stable)
		}
	}
	if err := c.version(rc, version); err != nil {
		return Result{}, err
	}
	w := map[string]float64{version: 100}
	if version == cur.Stable && sameWeights(rc, cur.Weights, w) {
		return Result{Revision: cur}, nil
	}
	c.drainOthers(rc, rs, cur.Weights, version)
	rs.RolledBack, rs.Frozen, rs.PreviousStable = nil, "", cur.Stable
	rs.StepsDone, rs.Paused = true, false
	rev, err := c.commit(rc, rs, w, version, source, fmt.Sprintf(reasonFmt, version), "promote", version)
	return Result{Revision: rev, Changed: err == nil}, err
}

// Rollback sends all traffic back to the stable version now and ends any
// stepped rollout.
func (c *Controller) Rollback(route, who string) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, rs, err := c.route(route)
	if err != nil {
		return Result{}, err
	}
	cur := rs.Current()
	w := map[string]float64{cur.Stable: 100}
	if len(rc.Steps) > 0 && !rs.StepsDone {
		rs.StepsDone, rs.Paused = true, false // the rollout ends here
		c.save()
	}
	if sameWeights(rc, cur.Weights, w) {
		return Result{Revision: cur}, nil
	}
	if rs.RolledBack == nil {
		rs.RolledBack = map[string]string{}
	}
	for _, v := range rc.VersionOrder {
		if v != cur.Stable && cur.Weights[v] > 0 {
			rs.RolledBack[v] = "manual rollback by " + who
			c.o.Metrics.Rollbacks.WithLabelValues(rc.Name, v, "manual").Inc()
		}
	}
	rev, err := c.commit(rc, rs, w, cur.Stable, state.SourceAdmin, "rollback to "+cur.Stable+" by "+who, "rollback", "")
	return Result{Revision: rev, Changed: err == nil}, err
}

// Pause holds a stepped rollout where it is.
func (c *Controller) Pause(route, who string) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, rs, err := c.route(route)
	if err != nil {
		return Result{}, err
	}
	if len(rc.Steps) == 0 || rs.StepsDone {
		return Result{}, fmt.Errorf("%w: route %s has no stepped rollout in progress", ErrConflict, route)
	}
	if rs.Paused {
		return Result{Revision: rs.Current()}, nil
	}
	rs.Paused, rs.PausedAt = true, c.o.Now()
	c.save()
	c.o.Events.Add(route, "step", fmt.Sprintf("rollout paused at step %d/%d by %s", rs.Step+1, len(rc.Steps), who))
	return Result{Revision: rs.Current(), Changed: true}, nil
}

// Resume continues a paused (or frozen) stepped rollout.
func (c *Controller) Resume(route, who string) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, rs, err := c.route(route)
	if err != nil {
		return Result{}, err
	}
	if !rs.Paused && rs.Frozen == "" {
		return Result{}, fmt.Errorf("%w: route %s is not paused", ErrConflict, route)
	}
	now := c.o.Now()
	if rs.Paused {
		rs.PausedFor += now.Sub(rs.PausedAt)
		if s := c.stepAt(rc, rs); s != nil && s.Pause != nil && s.Pause.Indefinite {
			c.nextStep(rs, now) // resuming an indefinite pause completes it
		}
	}
	rs.Paused, rs.Frozen = false, ""
	for k := range c.frozen {
		if len(k) > len(route) && k[:len(route)+1] == route+"/" {
			delete(c.frozen, k)
		}
	}
	c.save()
	c.o.Events.Add(route, "step", "rollout resumed by "+who)
	return Result{Revision: rs.Current(), Changed: true}, nil
}

// History returns a route's revisions, oldest first.
func (c *Controller) History(route string) ([]state.Revision, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, rs, err := c.route(route)
	if err != nil {
		return nil, err
	}
	return append([]state.Revision(nil), rs.Revisions...), nil
}

// Undo restores revision n's weights and stable as a new revision; n <= 0
// means the one before the current.
func (c *Controller) Undo(route string, n int, who string) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rc, rs, err := c.route(route)
	if err != nil {
		return Result{}, err
	}
	cur := rs.Current()
	if n <= 0 {
		if len(rs.Revisions) < 2 {
			return Result{}, fmt.Errorf("%w: nothing to undo: route %s has only revision %d", ErrConflict, route, cur.Revision)
		}
		n = rs.Revisions[len(rs.Revisions)-2].Revision
	}
	if n == cur.Revision {
		return Result{}, fmt.Errorf("%w: revision %d is already the current one", ErrConflict, n)
	}
	var target *state.Revision
	for i := range rs.Revisions {
		if rs.Revisions[i].Revision == n {
			target = &rs.Revisions[i]
		}
	}
	if target == nil {
		return Result{}, fmt.Errorf("%w: route %s has no revision %d (it has %d to %d)", ErrNotFound, route, n, rs.Revisions[0].Revision, cur.Revision)
	}
	if why := incompatible(*target, rc); why != "" {
		return Result{}, fmt.Errorf("%w: cannot restore revision %d: %s", ErrConflict, n, why)
	}
	w := maps.Clone(target.Weights)
	for v := range w {
		if _, ok := rc.Versions[v]; !ok {
			delete(w, v)
		}
	}
	rs.RolledBack, rs.Frozen = nil, ""
	rev, err := c.commit(rc, rs, w, target.Stable, state.SourceUndo, fmt.Sprintf("undo to revision %d by %s", n, who), "undo", "")
	return Result{Revision: rev, Changed: err == nil}, err
}
