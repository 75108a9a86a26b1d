// Package rollout is veer's release brain: it owns every route's live
// weights and stable version, turns every change (file reload, admin call,
// automatic rollback, rollout step, undo) into a numbered revision that is
// saved before it is announced, and publishes a freshly compiled routing
// table after each one. The judge and the stepped rollouts run from Run.
package rollout

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/events"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/notify"
	"github.com/veer-proxy/veer/router"
	"github.com/veer-proxy/veer/state"
)

// Sentinel errors; the admin API maps them to 404, 400 and 409.
var (
	ErrNotFound = errors.New("rollout: not found")
	ErrInvalid  = errors.New("rollout: invalid request")
	ErrConflict = errors.New("rollout: conflict")
)

// Phases of a route (SPEC).
const (
	PhaseStable      = "stable"
	PhaseProgressing = "progressing"
	PhasePaused      = "paused"
	PhaseRolledBack  = "rolled-back"
)

// Notifier receives webhook messages (notify.Notifier); may be nil.
type Notifier interface{ Send(notify.Message) }

// Options wires a Controller.
type Options struct {
	Config    *config.Config
	StateFile string // resolved path; "" keeps state in memory only
	Registry  *router.Registry
	Metrics   *metrics.Metrics
	Events    *events.Log
	Notifier  Notifier
	Log       *slog.Logger
	Now       func() time.Time
	// Publish receives every new routing table (the proxy's Store).
	Publish func(*router.Table)
}

// ConfigInfo is GET /api/v1/config.
type ConfigInfo struct {
	File      string    `json:"file"`
	LoadedAt  time.Time `json:"loaded_at"`
	LastError string    `json:"last_error"`
}

// Controller is safe for concurrent use: one mutex orders every change.
type Controller struct {
	o Options

	mu      sync.Mutex
	cfg     *config.Config
	st      *state.State
	table   *router.Table
	cfgInfo ConfigInfo
	frozen  map[string]bool // route/version already alerted by freeze
}

// New restores the state file, reconciles it with cfg (SPEC's reload rule:
// the file wins only where it changed) and publishes the first table.
func New(o Options) (*Controller, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Events == nil {
		o.Events = events.New(0, o.Now)
	}
	c := &Controller{o: o, frozen: map[string]bool{}}
	if o.StateFile != "" {
		c.st = state.Load(o.StateFile, o.Now(), o.Log)
	} else {
		c.st = state.New()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.apply(o.Config, false); err != nil {
		return nil, err
	}
	return c, nil
}

// Table returns the current routing table.
func (c *Controller) Table() *router.Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.table
}

// Config returns the config in effect.
func (c *Controller) Config() *config.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Events returns the event log.
func (c *Controller) Events() *events.Log { return c.o.Events }

// ConfigInfo reports the last reload.
func (c *Controller) ConfigInfo() ConfigInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfgInfo
}

// Reload applies a new, valid config: routes, versions and backends change;
// a route's weights or stable change only where the file changed them.
func (c *Controller) Reload(cfg *config.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.apply(cfg, true); err != nil {
		c.reloadFailedLocked(err)
		return err
	}
	c.o.Metrics.Reloads.WithLabelValues("success").Inc()
	c.o.Events.Add("", "reload", "config reloaded from "+cfg.File)
	return nil
}

// ReloadFailed records a config that could not be loaded: the old one keeps
// serving.
func (c *Controller) ReloadFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reloadFailedLocked(err)
}

func (c *Controller) reloadFailedLocked(err error) {
	msg := err.Error()
	c.cfgInfo.LastError = msg
	c.o.Metrics.Reloads.WithLabelValues("failure").Inc()
	first := strings.SplitN(msg, "\n", 2)[0]
	c.o.Events.Add("", "reload-failed", msg)
	c.o.Log.Error("config reload failed: still serving the previous config", "problem", first, "problems", strings.Count(msg, "\n")+1)
}

// apply installs cfg. Caller holds c.mu.
func (c *Controller) apply(cfg *config.Config, reload bool) error {
	now := c.o.Now()
	changed := false
	seen := map[string]bool{}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		seen[rc.Name] = true
		fileW := floats(rc.Weights)
		rs := c.st.Routes[rc.Name]
		switch {
		case rs == nil || len(rs.Revisions) == 0:
			rs = &state.Route{}
			c.st.Routes[rc.Name] = rs
			rs.Append(state.Revision{Time: now, Weights: fileW, Stable: rc.Stable, Source: state.SourceFile, Reason: "initial config"})
			changed = true
		case !maps.Equal(fileW, rs.FileWeights) || rc.Stable != rs.FileStable:
			rs.Append(state.Revision{Time: now, Weights: fileW, Stable: rc.Stable, Source: state.SourceFile, Reason: "weights or stable changed in " + fileName(cfg)})
			rs.RolledBack, rs.Frozen = nil, ""
			changed = true
		default:
			if why := incompatible(rs.Current(), rc); why != "" {
				rs.Append(state.Revision{Time: now, Weights: fileW, Stable: rc.Stable, Source: state.SourceFile, Reason: why})
				rs.RolledBack, rs.Frozen = nil, ""
				changed = true
			}
		}
		if !maps.Equal(fileW, rs.FileWeights) || rc.Stable != rs.FileStable {
			rs.FileWeights, rs.FileStable = fileW, rc.Stable
			changed = true
		}
		if key := stepsKey(rc); key != rs.StepsKey {
			rs.StepsKey = key
			rs.Step, rs.StepStarted, rs.Paused, rs.PausedFor, rs.StepsDone = 0, now, false, 0, len(rc.Steps) == 0
			if len(rc.Steps) > 0 { // a new rollout starts: an earlier rollback or freeze no longer describes it
				rs.RolledBack, rs.Frozen = nil, ""
			}
			changed = true
		}
	}
	for name := range c.st.Routes {
		if !seen[name] {
			delete(c.st.Routes, name)
			c.o.Metrics.ForgetRoute(name)
			changed = true
		}
	}
	t, err := router.Compile(cfg, c.effective(cfg), c.o.Registry)
	if err != nil {
		return fmt.Errorf("cannot build the routing table: %w", err)
	}
	c.cfg = cfg
	c.cfgInfo = ConfigInfo{File: cfg.File, LoadedAt: now.UTC()}
	if changed {
		c.save()
	}
	c.publish(t)
	return nil
}

// incompatible says why a route's current revision cannot serve rc (a
// version it weights or its stable is gone), or "".
func incompatible(cur state.Revision, rc *config.Route) string {
	if _, ok := rc.Versions[cur.Stable]; !ok {
		return fmt.Sprintf("stable version %q was removed from the config; using the file's weights", cur.Stable)
	}
	for v, w := range cur.Weights {
		if _, ok := rc.Versions[v]; !ok && w > 0 {
			return fmt.Sprintf("version %q was removed from the config; using the file's weights", v)
		}
	}
	return ""
}

func stepsKey(rc *config.Route) string {
	if len(rc.Steps) == 0 {
		return ""
	}
	return fmt.Sprintf("%s|%+v", rc.Candidate, stepsString(rc.Steps))
}

func stepsString(steps []config.Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, describeStep(s))
	}
	return out
}

func fileName(cfg *config.Config) string {
	if cfg.File == "" {
		return "the config"
	}
	return cfg.File
}

// effective is every route's live weights and stable. Caller holds c.mu.
func (c *Controller) effective(cfg *config.Config) map[string]router.Effective {
	out := make(map[string]router.Effective, len(cfg.Routes))
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		rs := c.st.Routes[rc.Name]
		cur := rs.Current()
		w := make(map[string]config.Percent, len(rc.VersionOrder))
		for _, v := range rc.VersionOrder {
			p, _ := config.PercentFromFloat(cur.Weights[v])
			w[v] = p
		}
		out[rc.Name] = router.Effective{Weights: w, Stable: cur.Stable, Drain: rs.Drain}
	}
	return out
}

// publish swaps in t and updates the gauges. Caller holds c.mu.
func (c *Controller) publish(t *router.Table) {
	c.table = t
	c.o.Registry.Retain(t)
	for _, r := range t.Routes {
		for _, v := range r.Versions {
			v.Metrics.Weight.Set(v.Weight.Float())
		}
		c.o.Metrics.Revision.WithLabelValues(r.Name).Set(float64(c.st.Routes[r.Name].Current().Revision))
	}
	if c.o.Publish != nil {
		c.o.Publish(t)
	}
}

// rebuild recompiles the table after a change of live state. Caller holds c.mu.
func (c *Controller) rebuild() error {
	t, err := router.Compile(c.cfg, c.effective(c.cfg), c.o.Registry)
	if err != nil {
		return err
	}
	c.publish(t)
	return nil
}

func (c *Controller) save() {
	if c.o.StateFile == "" {
		return
	}
	if err := state.Save(c.o.StateFile, c.st); err != nil {
		c.o.Log.Error("cannot write the state file: the change is live but a restart would lose it", "file", c.o.StateFile, "err", err)
	}
}

func floats(w map[string]config.Percent) map[string]float64 {
	out := make(map[string]float64, len(w))
	for k, v := range w {
		out[k] = v.Float()
	}
	return out
}

// commit makes a new revision of route with weights and stable, saves the
// state, publishes the table and records the event and webhook. Caller holds
// c.mu. It returns the new revision.
func (c *Controller) commit(rc *config.Route, rs *state.Route, weights map[string]float64, stable, source, reason, event, version string) (state.Revision, error) {
	before := rs.Current()
	for _, v := range rc.VersionOrder { // versions left out get 0
		if _, ok := weights[v]; !ok {
			weights[v] = 0
		}
	}
	rev := rs.Append(state.Revision{Time: c.o.Now().UTC(), Weights: weights, Stable: stable, Source: source, Reason: reason})
	if err := c.rebuild(); err != nil {
		rs.Revisions = rs.Revisions[:len(rs.Revisions)-1]
		return state.Revision{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c.save()
	c.o.Events.Add(rc.Name, event, fmt.Sprintf("revision %d: %s (%s)", rev.Revision, reason, fmtWeights(rc, weights)))
	if c.o.Notifier != nil {
		c.o.Notifier.Send(notify.Message{Event: event, Route: rc.Name, Version: version, Before: before.Weights,
			After: weights, Reason: reason, Revision: rev.Revision, Time: rev.Time})
	}
	return rev, nil
}

func fmtWeights(rc *config.Route, w map[string]float64) string {
	var parts []string
	for _, v := range rc.VersionOrder {
		parts = append(parts, v+"="+strconv.FormatFloat(w[v], 'f', -1, 64))
	}
	return strings.Join(parts, " ")
}

// route finds a route's config and state. Caller holds c.mu.
func (c *Controller) route(name string) (*config.Route, *state.Route, error) {
	for i := range c.cfg.Routes {
		if c.cfg.Routes[i].Name == name {
			return &c.cfg.Routes[i], c.st.Routes[name], nil
		}
	}
	return nil, nil, fmt.Errorf("%w: no route %q", ErrNotFound, name)
}

func sortedVersions(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
