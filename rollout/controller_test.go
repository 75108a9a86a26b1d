package rollout

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/events"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/notify"
	"github.com/veer-proxy/veer/router"
	"github.com/veer-proxy/veer/state"
)

// clock is an injected clock that tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

type sink struct {
	mu  sync.Mutex
	got []notify.Message
}

func (s *sink) Send(m notify.Message) { s.mu.Lock(); s.got = append(s.got, m); s.mu.Unlock() }
func (s *sink) all() []notify.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notify.Message(nil), s.got...)
}

type fixture struct {
	t     *testing.T
	c     *Controller
	clk   *clock
	hooks *sink
	m     *metrics.Metrics
	file  string
	dir   string
}

const baseYAML = `
routes:
  - name: shop
    stable: blue
    versions:
      blue:   {backends: ["127.0.0.1:9001"]}
      green:  {backends: ["127.0.0.1:9011"]}
      canary: {backends: ["127.0.0.1:9021"]}
    weights: {blue: 80, green: 0, canary: 20}
    candidate: canary
    sticky: {cookie: veer, drain: 30s}
    rollback: {window: 30s, min_requests: 20, max_error_rate: 5}
`

func parse(t *testing.T, dir, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(dir, "veer.yaml"), []byte(text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func newFixture(t *testing.T, text string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, file: filepath.Join(dir, "state.json"),
		clk: &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}}
	f.start(parse(t, dir, text))
	return f
}

// start (re)creates the controller on the same state file: a restart.
func (f *fixture) start(cfg *config.Config) {
	f.t.Helper()
	f.m = metrics.New()
	f.hooks = &sink{}
	c, err := New(Options{Config: cfg, StateFile: f.file, Registry: router.NewRegistry(f.m), Metrics: f.m,
		Events: events.New(100, f.clk.Now), Notifier: f.hooks, Now: f.clk.Now,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.t.Fatal(err)
	}
	f.c = c
}

// traffic records n requests on version, failing of them, spread over the
// last few seconds before now.
func (f *fixture) traffic(version string, n, failing int, latency time.Duration) {
	v := f.c.Table().Route("shop").Version(version)
	now := f.clk.Now()
	for i := 0; i < n; i++ {
		v.Window.Record(now.Add(-time.Duration(i%5)*time.Second), latency, i < failing)
	}
}

func (f *fixture) weights() map[string]float64 {
	r, err := f.c.Route("shop")
	if err != nil {
		f.t.Fatal(err)
	}
	return r.Weights
}

func (f *fixture) eventTypes() []string {
	var out []string
	for _, e := range f.c.Events().List() {
		out = append(out, e.Type)
	}
	return out
}

func TestAutoRollback(t *testing.T) {
	tests := []struct {
		name         string
		n, failing   int
		latency      time.Duration
		extra        string // appended to the rollback block
		wantRollback bool
		wantReason   string
	}{
		{name: "8% of 100 requests rolls back", n: 100, failing: 8, wantRollback: true, wantReason: "error rate 8.0% > 5% over 30s, 100 requests"},
		{name: "1 failure in 3 requests is below min_requests", n: 3, failing: 1},
		{name: "2% never rolls back", n: 500, failing: 10},
		{name: "exactly 5% does not roll back", n: 100, failing: 5},
		{name: "latency only, over max_p99", n: 100, latency: 800 * time.Millisecond, extra: ", max_p99: 500ms", wantRollback: true, wantReason: "p99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := baseYAML
			if tt.extra != "" {
				text = strings.Replace(text, "max_error_rate: 5}", "max_error_rate: 5"+tt.extra+"}", 1)
			}
			f := newFixture(t, text)
			lat := tt.latency
			if lat == 0 {
				lat = 10 * time.Millisecond
			}
			f.traffic("blue", 200, 0, 10*time.Millisecond)
			f.traffic("canary", tt.n, tt.failing, lat)
			f.c.Evaluate(f.clk.Now())
			w := f.weights()
			if !tt.wantRollback {
				if w["canary"] != 20 {
					t.Fatalf("canary weight = %v, want 20 (no rollback)", w["canary"])
				}
				return
			}
			if w["canary"] != 0 || w["blue"] != 100 {
				t.Fatalf("weights = %v, want canary 0 and blue 100", w)
			}
			h, _ := f.c.History("shop")
			last := h[len(h)-1]
			if last.Source != state.SourceAutoRollback || !strings.Contains(last.Reason, tt.wantReason) {
				t.Errorf("revision = %+v, want source auto-rollback and reason containing %q", last, tt.wantReason)
			}
			if r, _ := f.c.Route("shop"); r.Phase != PhaseRolledBack {
				t.Errorf("phase = %s, want %s", r.Phase, PhaseRolledBack)
			}
			msgs := f.hooks.all()
			if len(msgs) != 1 || msgs[0].Event != "rollback" || msgs[0].Version != "canary" || msgs[0].Before["canary"] != 20 || msgs[0].After["canary"] != 0 {
				t.Errorf("webhook messages = %+v", msgs)
			}
			kind := "error-rate"
			if tt.latency > 0 {
				kind = "latency"
			}
			if got := testutil.ToFloat64(f.m.Rollbacks.WithLabelValues("shop", "canary", kind)); got != 1 {
				t.Errorf("veer_rollbacks_total{reason=%s} = %v, want 1", kind, got)
			}
			// A second pass does not roll back again.
			f.c.Evaluate(f.clk.Add(time.Second))
			if h2, _ := f.c.History("shop"); len(h2) != len(h) {
				t.Errorf("second pass made another revision: %d → %d", len(h), len(h2))
			}
		})
	}
}

func TestFreezeMovesNoTraffic(t *testing.T) {
	f := newFixture(t, strings.Replace(baseYAML, "max_error_rate: 5}", "max_error_rate: 5, action: freeze}", 1))
	f.traffic("canary", 100, 30, time.Millisecond)
	f.c.Evaluate(f.clk.Now())
	f.c.Evaluate(f.clk.Add(time.Second))
	if w := f.weights(); w["canary"] != 20 {
		t.Fatalf("freeze moved traffic: %v", w)
	}
	r, _ := f.c.Route("shop")
	if r.Phase != PhasePaused || !strings.Contains(r.Frozen, "error rate 30.0%") {
		t.Errorf("phase %s frozen %q, want paused with the reason", r.Phase, r.Frozen)
	}
	n := 0
	for _, e := range f.eventTypes() {
		if e == "freeze" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("freeze events = %d, want exactly 1 (alert once)", n)
	}
}

func TestRollbackSurvivesRestartAndUnrelatedReload(t *testing.T) {
	f := newFixture(t, baseYAML)
	f.traffic("canary", 100, 10, time.Millisecond)
	f.c.Evaluate(f.clk.Now())
	if w := f.weights(); w["canary"] != 0 {
		t.Fatalf("no rollback: %v", w)
	}
	h, _ := f.c.History("shop")
	rev := h[len(h)-1].Revision

	// Restart on the same file and state.
	f.start(parse(t, f.dir, baseYAML))
	if w := f.weights(); w["canary"] != 0 {
		t.Fatalf("after restart canary weight = %v, want 0", w["canary"])
	}
	if r, _ := f.c.Route("shop"); r.Revision != rev || r.Phase != PhaseRolledBack {
		t.Fatalf("after restart revision %d phase %s, want %d rolled-back", r.Revision, r.Phase, rev)
	}

	// An edit that does not touch weights or stable keeps the rollback.
	edited := strings.Replace(baseYAML, "min_requests: 20", "min_requests: 30", 1)
	if err := f.c.Reload(parse(t, f.dir, edited)); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.c.Route("shop"); r.Revision != rev || r.Weights["canary"] != 0 {
		t.Fatalf("unrelated edit changed revision %d→%d weights %v", rev, r.Revision, r.Weights)
	}

	// An edit of the weights in the file is a file revision.
	reweighted := strings.Replace(edited, "blue: 80, green: 0, canary: 20", "blue: 90, green: 0, canary: 10", 1)
	if err := f.c.Reload(parse(t, f.dir, reweighted)); err != nil {
		t.Fatal(err)
	}
	r, _ := f.c.Route("shop")
	h, _ = f.c.History("shop")
	if r.Revision != rev+1 || r.Weights["canary"] != 10 || h[len(h)-1].Source != state.SourceFile {
		t.Fatalf("weights edit: revision %d weights %v source %s; want %d, canary 10, file", r.Revision, r.Weights, h[len(h)-1].Source, rev+1)
	}
}

func TestCorruptStateFileIsMovedAside(t *testing.T) {
	for _, tt := range []struct{ name, content string }{
		{"garbage", "\x00\x01 not json"},
		{"truncated", `{"format":1,"routes":{"shop":{"revisions":[{"revision":1,`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "state.json")
			if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			f := &fixture{t: t, dir: dir, file: file, clk: &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
			f.start(parse(t, dir, baseYAML))
			if w := f.weights(); w["canary"] != 20 {
				t.Errorf("weights %v, want the config's", w)
			}
			aside := file + ".corrupt-20260102T030405Z"
			got, err := os.ReadFile(aside)
			if err != nil || string(got) != tt.content {
				t.Errorf("moved-aside file: %q, %v; want the original content", got, err)
			}
			// The new state file is valid and restores.
			f.start(parse(t, dir, baseYAML))
			if r, _ := f.c.Route("shop"); r.Revision != 1 {
				t.Errorf("revision after restart = %d, want 1", r.Revision)
			}
		})
	}
}

func TestOperations(t *testing.T) {
	f := newFixture(t, baseYAML)
	c := f.c
	// Errors.
	if _, err := c.SetWeights("nope", map[string]float64{"blue": 100}, "t"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown route: %v, want ErrNotFound", err)
	}
	for _, w := range []map[string]float64{{"blue": 90}, {"blue": 90, "red": 10}, {"blue": 99.995, "canary": 0.005}, {}} {
		if _, err := c.SetWeights("shop", w, "t"); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetWeights(%v) = %v, want ErrInvalid", w, err)
		}
	}
	if _, err := c.Switch("shop", "red", "t"); !errors.Is(err, ErrInvalid) {
		t.Errorf("switch to unknown version: %v", err)
	}
	if _, err := c.Resume("shop", "t"); !errors.Is(err, ErrConflict) {
		t.Errorf("resume when nothing is paused: %v, want ErrConflict", err)
	}
	if _, err := c.Undo("shop", 1, "t"); !errors.Is(err, ErrConflict) {
		t.Errorf("undo to the current revision: %v, want ErrConflict", err)
	}
	if _, err := c.Undo("shop", 42, "t"); !errors.Is(err, ErrNotFound) {
		t.Errorf("undo to a missing revision: %v, want ErrNotFound", err)
	}

	// Switch, idempotent.
	res, err := c.Switch("shop", "green", "10.0.0.1")
	if err != nil || !res.Changed || res.Revision.Revision != 2 {
		t.Fatalf("switch: %+v %v", res, err)
	}
	if res, _ := c.Switch("shop", "green", "10.0.0.1"); res.Changed || res.Revision.Revision != 2 {
		t.Errorf("second switch made a revision: %+v", res)
	}
	if w := f.weights(); w["green"] != 100 || w["blue"] != 0 {
		t.Errorf("after switch %v", w)
	}
	r, _ := c.Route("shop")
	if r.Stable != "blue" {
		t.Errorf("switch changed stable to %s; it stays the rollback target until promote", r.Stable)
	}
	// The drain of blue's cookie sessions started (sticky.drain 30s).
	rt := c.Table().Route("shop")
	if rt.Version("blue").Weight != 0 {
		t.Fatal("blue still weighted")
	}

	// Undo goes back to revision 1.
	res, err = c.Undo("shop", 0, "t")
	if err != nil || res.Revision.Source != state.SourceUndo || f.weights()["canary"] != 20 {
		t.Fatalf("undo: %+v %v weights %v", res, err, f.weights())
	}

	// Manual rollback.
	res, err = c.Rollback("shop", "t")
	if err != nil || f.weights()["blue"] != 100 {
		t.Fatalf("rollback: %v %v", err, f.weights())
	}
	if got := testutil.ToFloat64(f.m.Rollbacks.WithLabelValues("shop", "canary", "manual")); got != 1 {
		t.Errorf("manual rollback metric = %v", got)
	}

	// Promote with no version picks the weighted candidate.
	if _, err := c.SetWeights("shop", map[string]float64{"blue": 70, "canary": 30}, "t"); err != nil {
		t.Fatal(err)
	}
	res, err = c.Promote("shop", "", "t")
	if err != nil || res.Revision.Stable != "canary" || f.weights()["canary"] != 100 {
		t.Fatalf("promote: %+v %v", res, err)
	}
	if r, _ := c.Route("shop"); r.Phase != PhaseStable {
		t.Errorf("phase after promote = %s", r.Phase)
	}
	h, _ := c.History("shop")
	var sources []string
	for _, x := range h {
		sources = append(sources, x.Source)
	}
	if got := strings.Join(sources, ","); got != "file,admin,undo,admin,admin,admin" {
		t.Errorf("history sources = %s", got)
	}
	for i, x := range h {
		if x.Revision != i+1 {
			t.Errorf("revision %d numbered %d", i+1, x.Revision)
		}
	}
}

const stepsYAML = `
routes:
  - name: shop
    stable: blue
    versions:
      blue:   {backends: ["127.0.0.1:9001"]}
      canary: {backends: ["127.0.0.1:9021"]}
    weights: {blue: 100, canary: 0}
    rollback: {window: 10s, min_requests: 20, max_error_rate: 5}
    steps:
      - set_weight: 20
      - pause: 1m
      - analysis: {window: 30s, min_requests: 50, max_error_rate: 1}
      - set_weight: 50
      - pause: {}
      - set_weight: 80
`

func TestSteppedRollout(t *testing.T) {
	f := newFixture(t, stepsYAML)
	f.c.Evaluate(f.clk.Now())
	if w := f.weights(); w["canary"] != 20 {
		t.Fatalf("step 1: %v", w)
	}
	f.c.Evaluate(f.clk.Add(30 * time.Second))
	if r, _ := f.c.Route("shop"); r.Step.Index != 1 || r.Phase != PhaseProgressing {
		t.Fatalf("in the pause: %+v", r.Step)
	}
	// A restart in the middle of the pause keeps the time already paused.
	f.start(parse(t, f.dir, stepsYAML))
	f.c.Evaluate(f.clk.Add(31 * time.Second))
	r, _ := f.c.Route("shop")
	if r.Step.Index != 2 {
		t.Fatalf("after the pause: step %d, want 2 (analysis)", r.Step.Index)
	}
	// Analysis: too few requests keeps waiting, never passes.
	f.c.Evaluate(f.clk.Add(40 * time.Second))
	if r, _ := f.c.Route("shop"); r.Step.Index != 2 {
		t.Fatalf("analysis passed without traffic: step %d", r.Step.Index)
	}
	f.traffic("canary", 100, 0, time.Millisecond)
	f.c.Evaluate(f.clk.Now())
	if w := f.weights(); w["canary"] != 50 {
		t.Fatalf("after the analysis: %v", w)
	}
	// Indefinite pause waits for resume.
	f.c.Evaluate(f.clk.Add(time.Hour))
	if r, _ := f.c.Route("shop"); r.Phase != PhasePaused || f.weights()["canary"] != 50 {
		t.Fatalf("indefinite pause: phase %s weights %v", r.Phase, f.weights())
	}
	if _, err := f.c.Resume("shop", "t"); err != nil {
		t.Fatal(err)
	}
	f.c.Evaluate(f.clk.Add(time.Second))
	f.c.Evaluate(f.clk.Add(time.Second))
	r, _ = f.c.Route("shop")
	if r.Stable != "canary" || r.Weights["canary"] != 100 || r.Phase != PhaseStable {
		t.Fatalf("after the last step: stable %s weights %v phase %s; want canary promoted", r.Stable, r.Weights, r.Phase)
	}
	h, _ := f.c.History("shop")
	var steps int
	for _, x := range h {
		if x.Source == state.SourceStep {
			steps++
		}
	}
	if steps != 4 { // 20, 50, 80, promote
		t.Errorf("step revisions = %d, want 4", steps)
	}
}

func TestAnalysisFailureRollsBack(t *testing.T) {
	f := newFixture(t, stepsYAML)
	f.c.Evaluate(f.clk.Now())
	f.c.Evaluate(f.clk.Add(61 * time.Second)) // pause done
	f.c.Evaluate(f.clk.Add(31 * time.Second))
	f.traffic("canary", 100, 3, time.Millisecond) // 3% > analysis's 1%, < rollback's 5%
	f.c.Evaluate(f.clk.Now())
	r, _ := f.c.Route("shop")
	if r.Weights["canary"] != 0 || r.Phase != PhaseRolledBack {
		t.Fatalf("analysis failure: weights %v phase %s", r.Weights, r.Phase)
	}
	if got := testutil.ToFloat64(f.m.Rollbacks.WithLabelValues("shop", "canary", "analysis")); got != 1 {
		t.Errorf("analysis rollback metric = %v", got)
	}
}
