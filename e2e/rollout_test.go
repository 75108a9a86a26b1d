package e2e

// Issue 6's end-to-end tests of stepped rollouts, blue-green switching back,
// mirroring to a slow version, the recipes' configs and `veer demo
// -upstreams-only`, with the real binary and real backends. Windows and
// pauses are shortened through the config (1-4s) so the whole file runs in
// well under a minute: `go test ./e2e -run Rollout`.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rolloutRoute is the part of GET /api/v1/routes/{name} these tests read.
type rolloutRoute struct {
	Phase    string             `json:"phase"`
	Stable   string             `json:"stable"`
	Revision int                `json:"revision"`
	Weights  map[string]float64 `json:"weights"`
	Step     *struct {
		Index   int    `json:"index"`
		Total   int    `json:"total"`
		Current string `json:"current"`
		Paused  bool   `json:"paused"`
		Done    bool   `json:"done"`
	} `json:"step"`
	RolledBack map[string]string `json:"rolled_back"`
	Versions   map[string]struct {
		Requests uint64  `json:"requests"`
		P99ms    float64 `json:"p99_ms"`
	} `json:"versions"`
}

func (r rolloutRoute) String() string {
	s := fmt.Sprintf("phase %s, stable %s, revision %d, weights %v", r.Phase, r.Stable, r.Revision, r.Weights)
	if r.Step != nil {
		s += fmt.Sprintf(", step %d/%d (%s) paused=%v done=%v", r.Step.Index, r.Step.Total, r.Step.Current, r.Step.Paused, r.Step.Done)
	}
	return s
}

type rolloutRevision struct {
	Revision int                `json:"revision"`
	Time     time.Time          `json:"time"`
	Weights  map[string]float64 `json:"weights"`
	Stable   string             `json:"stable"`
	Source   string             `json:"source"`
	Reason   string             `json:"reason"`
}

func routeOf(t *testing.T, v *Veer, name string) rolloutRoute {
	t.Helper()
	var r rolloutRoute
	getJSON(t, v.AdminURL()+"/api/v1/routes/"+name, &r)
	return r
}

func historyOf(t *testing.T, v *Veer, name string) []rolloutRevision {
	t.Helper()
	var h struct {
		Revisions []rolloutRevision `json:"revisions"`
	}
	getJSON(t, v.AdminURL()+"/api/v1/routes/"+name+"/history", &h)
	return h.Revisions
}

func eventMessages(t *testing.T, v *Veer, route string) string {
	t.Helper()
	var e struct {
		Events []struct{ Route, Type, Message string }
	}
	getJSON(t, v.AdminURL()+"/api/v1/events", &e)
	var b strings.Builder
	for _, ev := range e.Events {
		if ev.Route == route {
			fmt.Fprintf(&b, "%s: %s\n", ev.Type, ev.Message)
		}
	}
	return b.String()
}

// waitRoute polls the route until cond holds, failing after timeout with
// the last view. It returns the view that satisfied cond and when.
func waitRoute(t *testing.T, v *Veer, name string, timeout time.Duration, what string, cond func(rolloutRoute) bool) (rolloutRoute, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := routeOf(t, v, name)
		if cond(r) {
			return r, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; route: %s\nevents:\n%s", timeout, what, r, eventMessages(t, v, name))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// atStep is a cond: the rollout is at step index i (0-based).
func atStep(i int) func(rolloutRoute) bool {
	return func(r rolloutRoute) bool { return r.Step != nil && r.Step.Index == i }
}

func postOK(t *testing.T, url, body string) {
	t.Helper()
	if code := post(t, url, body); code != 200 {
		t.Fatalf("POST %s: %d, want 200", url, code)
	}
}

// load sends GETs to url one after the other, with a pause of every
// between them, until stopped, counting the versions that served.
type load struct {
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	versions map[string]int
	failed   int
}

func startLoad(t *testing.T, url string, every time.Duration) *load {
	t.Helper()
	l := &load{stop: make(chan struct{}), done: make(chan struct{}), versions: map[string]int{}}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			case <-time.After(every):
			}
			resp, err := client.Get(url)
			l.mu.Lock()
			if err != nil {
				l.failed++
			} else {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				l.versions[resp.Header.Get("X-Veer-Version")]++
				if resp.StatusCode >= 500 {
					l.failed++
				}
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.Stop() })
	return l
}

// Stop stops the load (once) and returns the versions that served.
func (l *load) Stop() map[string]int {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, n := range l.versions {
		out[k] = n
	}
	return out
}

// twoVersions is a route "shop" with blue stable at 100 and a canary, plus
// the route keys in extra (steps, rollback, ...), indented by four spaces.
func twoVersions(blue, canary *Backend, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, rate_limit: 1000}   # the tests poll the API
state_file: state.json
drain_timeout: 1s
routes:
  - name: shop
    stable: blue
    candidate: canary
    versions:
      blue: {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 100, canary: 0}
%s`, blue.Addr, canary.Addr, extra)
}

// TestRolloutCanaryPromotesItself: set_weight → pause → analysis →
// set_weight → pause with traffic flowing; each weight change is a step
// revision, the pause and the analysis window are waited for, and at the
// end the canary is the stable version at 100%.
func TestRolloutCanaryPromotesItself(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	v := StartVeer(t, twoVersions(blue, canary, `
    rollback: {window: 2s, min_requests: 5}
    steps:
      - set_weight: 20
      - pause: 1s
      - analysis: {window: 2s, min_requests: 10, max_error_rate: 1}
      - set_weight: 50
      - pause: 1s
`))
	ld := startLoad(t, v.ProxyURL()+"/", 5*time.Millisecond)

	// Watch it go through every step: 20% while pausing and analysing,
	// then 50%, then canary stable at 100%.
	seen := map[int]float64{}
	final, _ := waitRoute(t, v, "shop", 20*time.Second, "the rollout to promote the canary", func(r rolloutRoute) bool {
		if r.Step != nil && !r.Step.Done {
			if w, ok := seen[r.Step.Index]; ok && w != r.Weights["canary"] {
				t.Errorf("the canary's weight changed within step %d: %v then %v", r.Step.Index, w, r.Weights["canary"])
			}
			seen[r.Step.Index] = r.Weights["canary"]
			if r.Phase != "progressing" {
				t.Errorf("phase %q during step %d, want progressing", r.Phase, r.Step.Index)
			}
		}
		return r.Stable == "canary"
	})
	versions := ld.Stop()
	for i, want := range map[int]float64{1: 20, 2: 20, 4: 50} { // polled every 25ms: the 1-2s steps are seen
		if got, ok := seen[i]; !ok || got != want {
			t.Errorf("step index %d: canary weight %v (seen: %v), want %v", i, got, ok, want)
		}
	}
	if final.Phase != "stable" || final.Weights["canary"] != 100 || final.Weights["blue"] != 0 ||
		final.Step == nil || !final.Step.Done || final.Step.Index != 5 || final.Step.Total != 5 {
		t.Errorf("after the rollout: %s; want stable canary=100, step 5/5 done", final)
	}
	if versions["canary"] == 0 || versions["blue"] == 0 || ld.failed != 0 {
		t.Errorf("served during the rollout: %v, %d failed", versions, ld.failed)
	}

	h := historyOf(t, v, "shop")
	want := []struct {
		source, stable string
		canary         float64
		reason         string
	}{
		{"file", "blue", 0, "initial config"},
		{"step", "blue", 20, "step 1/5: set_weight 20"},
		{"step", "blue", 50, "step 4/5: set_weight 50"},
		{"step", "canary", 100, "rollout complete: promoted canary"},
	}
	if len(h) != len(want) {
		t.Fatalf("history has %d revisions, want %d: %+v", len(h), len(want), h)
	}
	for i, w := range want {
		r := h[i]
		if r.Revision != i+1 || r.Source != w.source || r.Stable != w.stable || r.Weights["canary"] != w.canary ||
			r.Weights["blue"] != 100-w.canary || !strings.Contains(r.Reason, w.reason) {
			t.Errorf("revision %d = %+v, want source %s, stable %s, canary %v, reason %q", i+1, r, w.source, w.stable, w.canary, w.reason)
		}
	}
	// The pause (1s) and the analysis window (2s) were waited for, and the
	// last pause (1s).
	if d := h[2].Time.Sub(h[1].Time); d < 3*time.Second-50*time.Millisecond {
		t.Errorf("20%% → 50%% took %s, want at least pause 1s + analysis window 2s", d)
	}
	if d := h[3].Time.Sub(h[2].Time); d < time.Second-50*time.Millisecond {
		t.Errorf("50%% → promoted took %s, want at least the 1s pause", d)
	}
	if ev := eventMessages(t, v, "shop"); !strings.Contains(ev, "step 3/5: analysis passed") {
		t.Errorf("no \"analysis passed\" event:\n%s", ev)
	}
	// The canary, now stable, serves everything.
	for i := 0; i < 20; i++ {
		if code, ver, _ := Get(t, v.ProxyURL()+"/"); code != 200 || ver != "canary" {
			t.Fatalf("after the promotion: %d from %q", code, ver)
		}
	}
}

// TestRolloutAnalysisFailsRollsBack: the canary fails 20% of its requests,
// over the analysis' 5% but under the automatic rollback's 50%: the
// analysis step fails it after its window and rolls it back.
func TestRolloutAnalysisFailsRollsBack(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	canary.FailEvery(5)
	v := StartVeer(t, twoVersions(blue, canary, `
    rollback: {max_error_rate: 50, window: 2s, min_requests: 5}
    steps:
      - set_weight: 50
      - analysis: {window: 2s, min_requests: 10, max_error_rate: 5}
      - set_weight: 100
`))
	ld := startLoad(t, v.ProxyURL()+"/", 5*time.Millisecond)
	final, _ := waitRoute(t, v, "shop", 15*time.Second, "the analysis to roll the canary back", func(r rolloutRoute) bool {
		return r.Phase == "rolled-back"
	})
	ld.Stop()
	if final.Weights["blue"] != 100 || final.Weights["canary"] != 0 || final.Stable != "blue" ||
		final.Step == nil || !final.Step.Done || !strings.Contains(final.RolledBack["canary"], "analysis failed") {
		t.Errorf("after the failed analysis: %s, rolled back %v", final, final.RolledBack)
	}
	if got := metricValue(t, v.AdminURL(), "veer_rollbacks_total", "route=shop", "version=canary", "reason=analysis"); got != 1 {
		t.Errorf(`veer_rollbacks_total{reason="analysis"} = %v, want 1`, got)
	}
	if got := metricValue(t, v.AdminURL(), "veer_rollbacks_total", "route=shop", "reason=error-rate"); got != 0 {
		t.Errorf(`veer_rollbacks_total{reason="error-rate"} = %v, want 0 (20%% is under the rollback's 50%%)`, got)
	}
	h := historyOf(t, v, "shop")
	if len(h) != 3 || h[1].Source != "step" || h[2].Source != "auto-rollback" || !strings.Contains(h[2].Reason, "analysis failed") {
		t.Fatalf("history: %+v; want file, step (50%%), auto-rollback (analysis failed)", h)
	}
	if d := h[2].Time.Sub(h[1].Time); d < 2*time.Second-50*time.Millisecond {
		t.Errorf("rolled back %s after the canary got traffic, before the 2s analysis window", d)
	}
	// The last step never ran, and the canary gets nothing now.
	before := canary.Hits.Load()
	for i := 0; i < 50; i++ {
		if _, ver, _ := Get(t, v.ProxyURL()+"/"); ver != "blue" {
			t.Fatalf("after the rollback: served by %q", ver)
		}
	}
	if n := canary.Hits.Load() - before; n != 0 {
		t.Errorf("the canary got %d requests after its rollback", n)
	}
}

// TestRolloutAnalysisWaitsForRequests: with no traffic the analysis step
// neither passes nor fails, however long past its window; it passes once
// enough requests arrive.
func TestRolloutAnalysisWaitsForRequests(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	v := StartVeer(t, twoVersions(blue, canary, `
    rollback: {window: 1s, min_requests: 5}
    steps:
      - set_weight: 50
      - analysis: {window: 1s, min_requests: 10, max_error_rate: 5}
`))
	_, at := waitRoute(t, v, "shop", 5*time.Second, "the analysis step", atStep(1))
	time.Sleep(time.Until(at.Add(2500 * time.Millisecond))) // 2.5 windows, no traffic
	r := routeOf(t, v, "shop")
	if r.Step == nil || r.Step.Index != 1 || r.Step.Done || r.Phase != "progressing" || r.Weights["canary"] != 50 || r.Stable != "blue" {
		t.Fatalf("2.5 windows without traffic: %s; want still at the analysis step (index 1), canary at 50%%", r)
	}
	if !strings.HasPrefix(r.Step.Current, "analysis") {
		t.Errorf("current step %q, want the analysis", r.Step.Current)
	}

	ld := startLoad(t, v.ProxyURL()+"/", 5*time.Millisecond)
	final, _ := waitRoute(t, v, "shop", 10*time.Second, "the analysis to pass once traffic arrives", func(r rolloutRoute) bool {
		return r.Stable == "canary"
	})
	ld.Stop()
	if final.Phase != "stable" || final.Weights["canary"] != 100 {
		t.Errorf("after the analysis passed: %s", final)
	}
	ev := eventMessages(t, v, "shop")
	m := regexp.MustCompile(`step 2/2: analysis passed \((\d+) requests`).FindStringSubmatch(ev)
	if m == nil {
		t.Fatalf("no \"analysis passed\" event:\n%s", ev)
	}
	var n int
	fmt.Sscan(m[1], &n)
	if n < 10 {
		t.Errorf("the analysis passed on %d requests, under its min_requests 10", n)
	}
}

// TestRolloutPauseResumePromoteRollback drives two rollouts through the
// admin API: shop is paused during a timed pause (held time does not count),
// resumed, resumed again out of an indefinite pause, then promoted before
// its last step; cart is rolled back in the middle of its rollout.
func TestRolloutPauseResumePromoteRollback(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, rate_limit: 1000}   # the tests poll the API
routes:
  - name: shop
    stable: blue
    candidate: canary
    versions:
      blue: {backends: [%[1]q]}
      canary: {backends: [%[2]q]}
    weights: {blue: 100, canary: 0}
    steps:
      - set_weight: 10
      - pause: 2s
      - set_weight: 30
      - pause: {}
      - set_weight: 60
      - pause: 1h
      - set_weight: 90
  - name: cart
    match: {path_prefix: /cart}
    stable: blue
    candidate: canary
    versions:
      blue: {backends: [%[1]q]}
      canary: {backends: [%[2]q]}
    weights: {blue: 100, canary: 0}
    steps:
      - set_weight: 25
      - pause: 1h
`, blue.Addr, canary.Addr))
	api := v.AdminURL() + "/api/v1/routes/"

	// Pause during the timed pause: nothing moves while held, even past
	// the pause's 2s.
	_, at := waitRoute(t, v, "shop", 5*time.Second, "shop's 2s pause", atStep(1))
	postOK(t, api+"shop/pause", `{}`)
	r := routeOf(t, v, "shop")
	if r.Phase != "paused" || !r.Step.Paused || r.Step.Index != 1 || r.Weights["canary"] != 10 {
		t.Fatalf("after pause: %s; want paused at index 1, canary 10%%", r)
	}
	heldFrom := time.Now()
	time.Sleep(2500 * time.Millisecond)
	r = routeOf(t, v, "shop")
	if r.Phase != "paused" || r.Step.Index != 1 || r.Weights["canary"] != 10 {
		t.Fatalf("held 2.5s: %s; want still paused at index 1", r)
	}
	postOK(t, api+"shop/resume", `{}`)
	resumedAt := time.Now()
	if r = routeOf(t, v, "shop"); r.Phase != "progressing" || r.Step.Paused || r.Step.Index != 1 {
		t.Fatalf("after resume: %s; want progressing, still in the pause (index 1)", r)
	}
	// The rest of the pause runs, then set_weight 30 and the indefinite
	// pause, which pauses the route by itself.
	r, movedAt := waitRoute(t, v, "shop", 5*time.Second, "shop's indefinite pause", atStep(3))
	if r.Phase != "paused" || !r.Step.Paused || r.Weights["canary"] != 30 {
		t.Errorf("at the indefinite pause: %s; want paused, canary 30%%", r)
	}
	// The pause ran 2s in all, less the time before the hold.
	ranBefore := heldFrom.Sub(at)
	if got := movedAt.Sub(resumedAt); got < 2*time.Second-ranBefore-100*time.Millisecond {
		t.Errorf("the pause ended %s after the resume; it had run %s of its 2s before the hold", got, ranBefore)
	}
	time.Sleep(500 * time.Millisecond)
	if r = routeOf(t, v, "shop"); r.Step.Index != 3 {
		t.Fatalf("the indefinite pause moved on by itself: %s", r)
	}
	postOK(t, api+"shop/resume", `{}`)
	r, _ = waitRoute(t, v, "shop", 5*time.Second, "shop's 1h pause", atStep(5))
	if r.Phase != "progressing" || r.Weights["canary"] != 60 {
		t.Errorf("at the 1h pause: %s; want progressing, canary 60%%", r)
	}

	// Promote skips the remaining steps.
	postOK(t, api+"shop/promote", `{}`)
	r = routeOf(t, v, "shop")
	if r.Phase != "stable" || r.Stable != "canary" || r.Weights["canary"] != 100 || !r.Step.Done {
		t.Errorf("after promote: %s; want stable canary at 100%%, steps done", r)
	}
	for i := 0; i < 10; i++ {
		if _, ver, _ := Get(t, v.ProxyURL()+"/"); ver != "canary" {
			t.Fatalf("after promote: served by %q", ver)
		}
	}
	if code := post(t, api+"shop/pause", `{}`); code != 409 {
		t.Errorf("pause after the rollout ended: %d, want 409", code)
	}
	h := historyOf(t, v, "shop")
	var got []string
	for _, rev := range h {
		got = append(got, fmt.Sprintf("%s:%v", rev.Source, rev.Weights["canary"]))
	}
	if want := "file:0 step:10 step:30 step:60 admin:100"; strings.Join(got, " ") != want {
		t.Errorf("shop's history %q, want %q", strings.Join(got, " "), want)
	}

	// Roll cart back in the middle of its rollout.
	waitRoute(t, v, "cart", 5*time.Second, "cart's 1h pause", atStep(1))
	postOK(t, api+"cart/rollback", `{}`)
	r = routeOf(t, v, "cart")
	if r.Phase != "rolled-back" || r.Stable != "blue" || r.Weights["blue"] != 100 || r.Weights["canary"] != 0 || !r.Step.Done {
		t.Errorf("after rollback: %s; want rolled-back, blue 100%%, steps done", r)
	}
	for i := 0; i < 10; i++ {
		if _, ver, _ := Get(t, v.ProxyURL()+"/cart"); ver != "blue" {
			t.Fatalf("cart after rollback: served by %q", ver)
		}
	}
	if got := metricValue(t, v.AdminURL(), "veer_rollbacks_total", "route=cart", "version=canary", "reason=manual"); got != 1 {
		t.Errorf(`veer_rollbacks_total{route="cart",reason="manual"} = %v, want 1`, got)
	}
	if code := post(t, api+"cart/resume", `{}`); code != 409 {
		t.Errorf("resume after the rollback: %d, want 409", code)
	}
}

// TestRolloutRestartMidRollout: veer stopped during a 4s pause and started
// again on the same state file resumes at the same step and revision, and
// the pause ends 4s after it began, counting the time already paused.
func TestRolloutRestartMidRollout(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	v := StartVeer(t, twoVersions(blue, canary, `
    steps:
      - set_weight: 20
      - pause: 4s
      - set_weight: 60
      - pause: 1h
`))
	waitRoute(t, v, "shop", 5*time.Second, "the 4s pause", atStep(1))
	h := historyOf(t, v, "shop")
	if len(h) != 2 || h[1].Source != "step" {
		t.Fatalf("history before the restart: %+v", h)
	}
	stepStart := h[1].Time // set_weight 20 and the pause began together
	time.Sleep(time.Until(stepStart.Add(1500 * time.Millisecond)))
	v.Stop()

	v2 := StartVeerIn(t, v.Dir, v.ConfigPath)
	restartedAt := time.Now()
	r := routeOf(t, v2, "shop")
	if r.Step == nil || r.Step.Index != 1 || r.Revision != 2 || r.Weights["canary"] != 20 || r.Phase != "progressing" {
		t.Fatalf("after the restart: %s; want the same step (index 1, the pause) and revision 2", r)
	}
	n := 0
	for i := 0; i < 100; i++ {
		if _, ver, _ := Get(t, v2.ProxyURL()+"/"); ver == "canary" {
			n++
		}
	}
	if n != 20 {
		t.Errorf("after the restart %d of 100 requests on the canary, want 20", n)
	}
	r, doneAt := waitRoute(t, v2, "shop", 10*time.Second, "the pause to end", atStep(3))
	if r.Weights["canary"] != 60 {
		t.Errorf("after the pause: %s; want canary 60%%", r)
	}
	if d := doneAt.Sub(stepStart); d < 4*time.Second-50*time.Millisecond {
		t.Errorf("the 4s pause ended after %s", d)
	}
	// Restarted 1.5s (plus the restart) into the pause: what is left is
	// at most 2.5s; counting from zero would take 4s more.
	if d := doneAt.Sub(restartedAt); d > 3500*time.Millisecond {
		t.Errorf("the pause ended %s after the restart: the time already paused (%s) was not counted", d, restartedAt.Sub(stepStart).Round(time.Millisecond))
	}
	h = historyOf(t, v2, "shop")
	if len(h) != 3 || h[2].Source != "step" || h[2].Weights["canary"] != 60 {
		t.Errorf("history after the restart: %+v", h)
	}
}

// TestRolloutBlueGreenSwitchBack: a switch to green and back to blue take
// effect on the very next request, each a revision, and blue stays stable
// (the rollback target) throughout.
func TestRolloutBlueGreenSwitchBack(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, rate_limit: 1000}   # the tests poll the API
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      green: {backends: [%q]}
    weights: {blue: 100, green: 0}
`, blue.Addr, green.Addr))
	api := v.AdminURL() + "/api/v1/routes/shop"
	postOK(t, api+"/switch", `{"version":"green"}`)
	for i := 0; i < 20; i++ {
		if code, ver, _ := Get(t, v.ProxyURL()+"/"); code != 200 || ver != "green" {
			t.Fatalf("request %d after the switch to green: %d from %q", i, code, ver)
		}
	}
	if r := routeOf(t, v, "shop"); r.Stable != "blue" || r.Weights["green"] != 100 {
		t.Errorf("after the switch: %s; want green 100%% with blue still stable", r)
	}
	// Switch back with the CLI: instant too.
	code, out, errOut := runVeerCLI(t, []string{"VEER_ADMIN=" + v.AdminURL()}, "switch", "shop", "blue")
	if code != 0 {
		t.Fatalf("veer switch shop blue: exit %d: %s%s", code, out, errOut)
	}
	for i := 0; i < 20; i++ {
		if code, ver, _ := Get(t, v.ProxyURL()+"/"); code != 200 || ver != "blue" {
			t.Fatalf("request %d after the switch back: %d from %q", i, code, ver)
		}
	}
	r := routeOf(t, v, "shop")
	if r.Phase != "stable" || r.Stable != "blue" || r.Weights["blue"] != 100 || r.Revision != 3 {
		t.Errorf("after the switch back: %s; want stable blue at 100%%, revision 3", r)
	}
	h := historyOf(t, v, "shop")
	if len(h) != 3 ||
		h[1].Source != "admin" || h[1].Weights["green"] != 100 || h[1].Stable != "blue" || !strings.Contains(h[1].Reason, "switch to green") ||
		h[2].Source != "admin" || h[2].Weights["blue"] != 100 || h[2].Stable != "blue" || !strings.Contains(h[2].Reason, "switch to blue") {
		t.Errorf("history: %+v; want file, switch to green, switch to blue", h)
	}
	if code, out, _ := runVeerCLI(t, []string{"VEER_ADMIN=" + v.AdminURL()}, "history", "shop"); code != 0 || !strings.Contains(out, "switch to blue") {
		t.Errorf("veer history shop: exit %d:\n%s", code, out)
	}
}

// slowBackend answers every request after delay and counts the requests
// that arrived and the answers sent.
type slowBackend struct {
	Addr              string
	arrived, answered atomic.Int64
}

func newSlowBackend(t *testing.T, delay time.Duration) *slowBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &slowBackend{Addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.arrived.Add(1)
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
		io.WriteString(w, "slow\n")
		b.answered.Add(1)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// TestRolloutMirrorSlow: half the requests are copied to a mirror that
// takes 1.5s to answer; every real request is still answered by blue well
// under that, and every copy reaches the mirror.
func TestRolloutMirrorSlow(t *testing.T) {
	blue := NewBackend(t, "blue")
	slow := newSlowBackend(t, 1500*time.Millisecond)
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, rate_limit: 1000}   # the tests poll the API
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      shadow: {backends: [%q]}
    weights: {blue: 100, shadow: 0}
    mirror: {version: shadow, percent: 50}
`, blue.Addr, slow.Addr))
	const n = 16
	var slowest time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		code, ver, body := Get(t, v.ProxyURL()+fmt.Sprintf("/item/%d", i))
		took := time.Since(start)
		slowest = max(slowest, took)
		if code != 200 || ver != "blue" || body != "blue\n" {
			t.Fatalf("request %d: %d from %q: %q", i, code, ver, body)
		}
		if took >= 500*time.Millisecond {
			t.Errorf("request %d took %s with a slow mirror, want < 500ms", i, took)
		}
	}
	answeredDuring := slow.answered.Load()
	t.Logf("slowest of %d requests: %s; mirror answers by then: %d", n, slowest, answeredDuring)
	Eventually(t, 10*time.Second, "8 copies to reach the mirror and be answered", func() bool {
		return slow.answered.Load() == n/2
	})
	if got := slow.arrived.Load(); got != n/2 {
		t.Errorf("the mirror got %d copies, want %d (50%% of %d)", got, n/2, n)
	}
	if got := metricValue(t, v.AdminURL(), "veer_mirror_requests_total", "route=shop", "version=shadow"); got != n/2 {
		t.Errorf("veer_mirror_requests_total = %v, want %d", got, n/2)
	}
	if got := metricValue(t, v.AdminURL(), "veer_mirror_dropped_total"); got != 0 {
		t.Errorf("veer_mirror_dropped_total = %v, want 0", got)
	}
	if r := routeOf(t, v, "shop"); r.Versions["blue"].P99ms >= 500 || r.Versions["shadow"].Requests != 0 {
		t.Errorf("blue p99 %vms (want < 500), shadow requests in the window %d (want 0)", r.Versions["blue"].P99ms, r.Versions["shadow"].Requests)
	}
}

// demoUpstreams is what `veer demo -upstreams-only` serves by default: the
// recipes' backends must be among them.
var demoUpstreams = map[string]string{
	"127.0.0.1:9001": "blue", "127.0.0.1:9002": "blue", "127.0.0.1:9011": "green", "127.0.0.1:9021": "canary",
}

// TestRolloutRecipesValidate: every docs/recipes/*.yaml passes `veer
// validate`, uses only the demo upstreams, and has its page, listed in the
// recipes' README.
func TestRolloutRecipesValidate(t *testing.T) {
	files, err := filepath.Glob("../docs/recipes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 6 {
		t.Fatalf("%d recipes in docs/recipes, want at least 6 (big bang, rolling steps, blue-green, canary with analysis, dark launch, mirroring)", len(files))
	}
	index, err := os.ReadFile("../docs/recipes/README.md")
	if err != nil {
		t.Fatal(err)
	}
	backends := regexp.MustCompile(`backends:\s*\[([^\]]*)\]`)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runVeerCLI(t, nil, "validate", "-config", f)
			if code != 0 {
				t.Errorf("veer validate -config %s: exit %d\n%s%s", f, code, out, errOut)
			}
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ms := backends.FindAllStringSubmatch(string(text), -1)
			if len(ms) == 0 {
				t.Errorf("%s: no backends found", f)
			}
			for _, m := range ms {
				for _, a := range strings.Split(m[1], ",") {
					a = strings.Trim(strings.TrimSpace(a), `"'`)
					if _, ok := demoUpstreams[a]; !ok {
						t.Errorf("%s: backend %q is not one of veer demo -upstreams-only's", f, a)
					}
				}
			}
			page, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".md")
			if err != nil {
				t.Fatalf("no page for %s: %v", f, err)
			}
			if !strings.Contains(string(page), name+".yaml") {
				t.Errorf("%s.md does not mention its config %s.yaml", name, name)
			}
			if !strings.Contains(string(index), "("+name+".md)") {
				t.Errorf("docs/recipes/README.md does not link %s.md", name)
			}
		})
	}
}

// TestRolloutDemoUpstreamsOnly runs `veer demo -upstreams-only` (on free
// ports, two blue) and stops it with Ctrl-C.
func TestRolloutDemoUpstreamsOnly(t *testing.T) {
	cmd := exec.Command(veerBin, "demo", "-upstreams-only", "-blue", "127.0.0.1:0,127.0.0.1:0",
		"-green", "127.0.0.1:0", "-canary", "127.0.0.1:0", "-fail-canary", "100")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed once veer exited, with its error in waitErr
	var waitErr error
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		waitErr = cmd.Wait()
		close(done)
	}()
	re := regexp.MustCompile(`^  (blue|green|canary) +(127\.0\.0\.1:\d+)`)
	got := map[string][]string{}
	timeout := time.After(15 * time.Second)
	for n := 0; n < 4; {
		select {
		case l, ok := <-lines:
			if !ok {
				<-done
				t.Fatalf("veer demo -upstreams-only ended early: %v", waitErr)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				got[m[1]] = append(got[m[1]], m[2])
				n++
			}
		case <-timeout:
			t.Fatalf("veer demo -upstreams-only listed %v in 15s, want 4 upstreams", got)
		}
	}
	if len(got["blue"]) != 2 || len(got["green"]) != 1 || len(got["canary"]) != 1 {
		t.Fatalf("upstreams %v, want two blue, one green, one canary", got)
	}
	for ver, addrs := range got {
		for _, a := range addrs {
			resp, err := client.Get("http://" + a + "/")
			if err != nil {
				t.Fatalf("GET %s upstream %s: %v", ver, a, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := 200
			if ver == "canary" {
				want = 500 // -fail-canary 100
			}
			if resp.StatusCode != want || (want == 200 && string(body) != "hello from "+ver+"\n") {
				t.Errorf("%s upstream %s: %d %q", ver, a, resp.StatusCode, body)
			}
		}
	}
	go func() {
		for range lines { // drain the rest of the output
		}
	}()
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-time.After(5 * time.Second):
		t.Fatal("veer demo -upstreams-only did not stop within 5s of SIGINT")
	case <-done:
		if waitErr != nil {
			t.Errorf("exit after SIGINT: %v, want 0", waitErr)
		}
	}
}
