package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veer-proxy/veer/admin"
	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/events"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/rollout"
	"github.com/veer-proxy/veer/router"
)

const testConfig = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: shop
    stable: blue
    versions:
      blue:  {backends: ["127.0.0.1:9001", "127.0.0.1:9002"]}
      green: {backends: ["127.0.0.1:9011"]}
    weights: {blue: 100, green: 0}
  - name: steps
    match: {path_prefix: /steps}
    stable: blue
    candidate: canary
    versions:
      blue:   {backends: ["127.0.0.1:9101"]}
      canary: {backends: ["127.0.0.1:9121"]}
    weights: {blue: 100, canary: 0}
    steps: [{set_weight: 20}, {pause: 1h}]
  - name: three
    match: {path_prefix: /three}
    stable: blue
    versions:
      blue:   {backends: ["127.0.0.1:9201"]}
      green:  {backends: ["127.0.0.1:9211"]}
      canary: {backends: ["127.0.0.1:9221"]}
    weights: {blue: 100}
`

// fixture is an admin handler over a real rollout.Controller (no proxy,
// no judge loop) behind a real loopback listener.
type fixture struct {
	t    *testing.T
	ctrl *rollout.Controller
	m    *metrics.Metrics
	srv  *httptest.Server
}

func newController(t *testing.T, m *metrics.Metrics) *rollout.Controller {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "veer.yaml"), []byte(testConfig))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	ctrl, err := rollout.New(rollout.Options{
		Config:    cfg,
		StateFile: filepath.Join(dir, "veer-state.json"),
		Registry:  router.NewRegistry(m),
		Metrics:   m,
		Events:    events.New(100, nil),
		Log:       log,
	})
	if err != nil {
		t.Fatalf("rollout.New: %v", err)
	}
	return ctrl
}

func newFixture(t *testing.T, tweak func(*admin.Options)) *fixture {
	t.Helper()
	m := metrics.New()
	f := &fixture{t: t, m: m, ctrl: newController(t, m)}
	o := admin.Options{Controller: f.ctrl, Metrics: m, RateLimit: 1000, Log: slog.New(slog.DiscardHandler)}
	if tweak != nil {
		tweak(&o)
	}
	f.srv = httptest.NewServer(admin.New(o))
	t.Cleanup(f.srv.Close)
	return f
}

// do sends a request with optional header name/value pairs and returns the
// status, the headers and the body.
func (f *fixture) do(method, path, body string, headers ...string) (int, http.Header, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, data
}

// json sends a request that must answer want and decodes its JSON body.
func (f *fixture) json(method, path, body string, want int, out any) {
	f.t.Helper()
	code, h, data := f.do(method, path, body)
	if code != want {
		f.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, code, want, data)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		f.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			f.t.Fatalf("%s %s: body is not JSON: %v\n%s", method, path, err, data)
		}
	}
}

type change struct {
	Route    rollout.RouteView `json:"route"`
	Revision struct {
		Revision int                `json:"revision"`
		Time     time.Time          `json:"time"`
		Weights  map[string]float64 `json:"weights"`
		Stable   string             `json:"stable"`
		Source   string             `json:"source"`
		Reason   string             `json:"reason"`
	} `json:"revision"`
	Changed bool `json:"changed"`
}

func TestRoutesShape(t *testing.T) {
	f := newFixture(t, nil)
	var list map[string][]map[string]any
	f.json("GET", "/api/v1/routes", "", 200, &list)
	routes := list["routes"]
	if len(routes) != 3 {
		t.Fatalf("got %d routes, want 3: %v", len(routes), list)
	}
	if routes[0]["name"] != "shop" || routes[1]["name"] != "steps" {
		t.Errorf("routes not in config order: %v, %v", routes[0]["name"], routes[1]["name"])
	}
	var one map[string]any
	f.json("GET", "/api/v1/routes/shop", "", 200, &one)
	for _, k := range []string{"name", "stable", "revision", "phase", "weights", "versions"} {
		if _, ok := one[k]; !ok {
			t.Errorf("ROUTE lacks %q: %v", k, one)
		}
	}
	if one["stable"] != "blue" || one["phase"] != "stable" || one["revision"] != 1.0 {
		t.Errorf("stable, phase, revision = %v, %v, %v; want blue, stable, 1", one["stable"], one["phase"], one["revision"])
	}
	if w := one["weights"].(map[string]any); w["blue"] != 100.0 || w["green"] != 0.0 {
		t.Errorf("weights = %v, want blue 100 green 0", w)
	}
	blue := one["versions"].(map[string]any)["blue"].(map[string]any)
	for _, k := range []string{"backends", "requests", "errors", "error_rate", "p50_ms", "p99_ms"} {
		if _, ok := blue[k]; !ok {
			t.Errorf("version lacks %q: %v", k, blue)
		}
	}
	backends := blue["backends"].([]any)
	if len(backends) != 2 {
		t.Fatalf("blue has %d backends, want 2", len(backends))
	}
	b := backends[0].(map[string]any)
	if b["address"] != "127.0.0.1:9001" {
		t.Errorf("backend address = %v", b["address"])
	}
	if _, ok := b["healthy"].(bool); !ok {
		t.Errorf("backend healthy is not a bool: %v", b)
	}
	var steps rollout.RouteView
	f.json("GET", "/api/v1/routes/steps", "", 200, &steps)
	if steps.Step == nil || steps.Step.Total != 2 || steps.Phase != "progressing" {
		t.Errorf("steps route: step %+v phase %q, want 2 steps, progressing", steps.Step, steps.Phase)
	}
}

func TestMutations(t *testing.T) {
	f := newFixture(t, nil)
	const by = "admin API client 127.0.0.1"
	tests := []struct {
		name        string
		method      string
		path        string
		body        string
		wantRev     int
		wantChanged bool
		wantWeights map[string]float64
		wantStable  string
		wantSource  string
		wantReason  string
	}{
		{"weights", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 80, "green": 20}}`, 2, true,
			map[string]float64{"blue": 80, "green": 20}, "blue", "admin", "weights set by " + by},
		{"weights left out get 0", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"green": 100}}`, 3, true,
			map[string]float64{"blue": 0, "green": 100}, "blue", "admin", "weights set by " + by},
		{"switch", "POST", "/api/v1/routes/shop/switch", `{"version": "blue"}`, 4, true,
			map[string]float64{"blue": 100, "green": 0}, "blue", "admin", "switch to blue by " + by},
		{"weights again", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 50, "green": 50}}`, 5, true,
			map[string]float64{"blue": 50, "green": 50}, "blue", "admin", "weights set by " + by},
		{"rollback", "POST", "/api/v1/routes/shop/rollback", "", 6, true,
			map[string]float64{"blue": 100, "green": 0}, "blue", "admin", "rollback to blue by " + by},
		{"rollback again is a no-op", "POST", "/api/v1/routes/shop/rollback", "{}", 6, false,
			map[string]float64{"blue": 100, "green": 0}, "blue", "admin", "rollback to blue by " + by},
		{"undo to the one before", "POST", "/api/v1/routes/shop/undo", "{}", 7, true,
			map[string]float64{"blue": 50, "green": 50}, "blue", "undo", "undo to revision 5 by " + by},
		{"promote the candidate with most weight, no body", "POST", "/api/v1/routes/shop/promote", "", 8, true,
			map[string]float64{"blue": 0, "green": 100}, "green", "admin", "promote green by " + by},
		{"promote named", "POST", "/api/v1/routes/shop/promote", `{"version": "blue"}`, 9, true,
			map[string]float64{"blue": 100, "green": 0}, "blue", "admin", "promote blue by " + by},
		{"promote named again is a no-op", "POST", "/api/v1/routes/shop/promote", `{"version": "blue"}`, 9, false,
			map[string]float64{"blue": 100, "green": 0}, "blue", "admin", "promote blue by " + by},
		{"undo to revision 1", "POST", "/api/v1/routes/shop/undo", `{"revision": 1}`, 10, true,
			map[string]float64{"blue": 100, "green": 0}, "blue", "undo", "undo to revision 1 by " + by},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got change
			f.json(tt.method, tt.path, tt.body, 200, &got)
			if got.Revision.Revision != tt.wantRev || got.Changed != tt.wantChanged {
				t.Errorf("revision %d changed %v, want %d %v", got.Revision.Revision, got.Changed, tt.wantRev, tt.wantChanged)
			}
			if got.Route.Name != "shop" || got.Route.Revision != tt.wantRev {
				t.Errorf("route %q at revision %d, want shop at %d", got.Route.Name, got.Route.Revision, tt.wantRev)
			}
			for v, w := range tt.wantWeights {
				if got.Revision.Weights[v] != w || got.Route.Weights[v] != w {
					t.Errorf("weight of %s: revision %v route %v, want %v", v, got.Revision.Weights[v], got.Route.Weights[v], w)
				}
			}
			if got.Revision.Stable != tt.wantStable || got.Route.Stable != tt.wantStable {
				t.Errorf("stable %q (route %q), want %q", got.Revision.Stable, got.Route.Stable, tt.wantStable)
			}
			if got.Revision.Source != tt.wantSource || got.Revision.Reason != tt.wantReason {
				t.Errorf("source %q reason %q, want %q %q", got.Revision.Source, got.Revision.Reason, tt.wantSource, tt.wantReason)
			}
		})
	}

	var hist struct {
		Revisions []map[string]any `json:"revisions"`
	}
	f.json("GET", "/api/v1/routes/shop/history", "", 200, &hist)
	if len(hist.Revisions) != 10 {
		t.Fatalf("history has %d revisions, want 10", len(hist.Revisions))
	}
	for i, r := range hist.Revisions {
		if r["revision"] != float64(i+1) {
			t.Errorf("history[%d] is revision %v: not oldest first", i, r["revision"])
		}
		for _, k := range []string{"revision", "time", "weights", "stable", "source", "reason"} {
			if _, ok := r[k]; !ok {
				t.Errorf("REVISION lacks %q: %v", k, r)
			}
		}
	}
}

func TestPauseResume(t *testing.T) {
	f := newFixture(t, nil)
	var got change
	f.json("POST", "/api/v1/routes/steps/pause", "", 200, &got)
	if !got.Changed || got.Route.Phase != "paused" || got.Route.Step == nil || !got.Route.Step.Paused {
		t.Errorf("pause: changed %v phase %q step %+v, want changed, paused", got.Changed, got.Route.Phase, got.Route.Step)
	}
	f.json("POST", "/api/v1/routes/steps/pause", "{}", 200, &got)
	if got.Changed {
		t.Errorf("pausing a paused route changed it")
	}
	f.json("POST", "/api/v1/routes/steps/resume", "", 200, &got)
	if !got.Changed || got.Route.Phase != "progressing" {
		t.Errorf("resume: changed %v phase %q, want changed, progressing", got.Changed, got.Route.Phase)
	}
	var evs struct{ Events []events.Event }
	f.json("GET", "/api/v1/events?route=steps", "", 200, &evs)
	var msgs []string
	for _, e := range evs.Events {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "\n")
	if !strings.Contains(all, "paused at step 1/2 by admin API client 127.0.0.1") || !strings.Contains(all, "resumed by admin API client 127.0.0.1") {
		t.Errorf("events do not name the client:\n%s", all)
	}
}

func TestSwitchIsIdempotent(t *testing.T) {
	f := newFixture(t, nil)
	var first, second change
	f.json("POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, 200, &first)
	f.json("POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, 200, &second)
	if !first.Changed || first.Revision.Revision != 2 {
		t.Errorf("first switch: changed %v revision %d, want true 2", first.Changed, first.Revision.Revision)
	}
	if second.Changed || second.Revision.Revision != 2 {
		t.Errorf("second switch: changed %v revision %d, want false 2", second.Changed, second.Revision.Revision)
	}
	var hist struct{ Revisions []json.RawMessage }
	f.json("GET", "/api/v1/routes/shop/history", "", 200, &hist)
	if len(hist.Revisions) != 2 {
		t.Errorf("two identical switches made %d revisions, want 2 (initial + one)", len(hist.Revisions))
	}
	var evs struct{ Events []events.Event }
	f.json("GET", "/api/v1/events", "", 200, &evs)
	n := 0
	for _, e := range evs.Events {
		if e.Type == "switch" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d switch events, want 1", n)
	}
}

func TestErrors(t *testing.T) {
	big := `{"weights": {"blue": 100}, "pad": "` + strings.Repeat("x", 1<<20) + `"}`
	tests := []struct {
		name      string
		method    string
		path      string
		body      string
		want      int
		wantInErr string
		wantAllow string
	}{
		{"unknown route", "GET", "/api/v1/routes/nope", "", 404, `no route "nope"`, ""},
		{"unknown route history", "GET", "/api/v1/routes/nope/history", "", 404, `no route "nope"`, ""},
		{"unknown route switch", "POST", "/api/v1/routes/nope/switch", `{"version": "green"}`, 404, `no route "nope"`, ""},
		{"unknown path", "GET", "/api/v1/nope", "", 404, "no such API endpoint", ""},
		{"unknown path under a route", "GET", "/api/v1/routes/shop/nope", "", 404, "no such API endpoint", ""},
		{"api root", "GET", "/api/", "", 404, "no such API endpoint", ""},
		{"wrong method on routes", "POST", "/api/v1/routes", "", 405, "not allowed", "GET, HEAD"},
		{"wrong method on a route", "DELETE", "/api/v1/routes/shop", "", 405, "not allowed", "GET, HEAD"},
		{"weights by POST", "POST", "/api/v1/routes/shop/weights", `{"weights": {"blue": 100}}`, 405, "use PUT", "PUT"},
		{"switch by GET", "GET", "/api/v1/routes/shop/switch", "", 405, "use POST", "POST"},
		{"events by POST", "POST", "/api/v1/events", "", 405, "use GET", "GET, HEAD"},
		{"bad JSON", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 100`, 400, "invalid JSON", ""},
		{"not JSON", "PUT", "/api/v1/routes/shop/weights", `weights=blue`, 400, "invalid JSON", ""},
		{"unknown field", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 100}, "force": true}`, 400, `unknown field "force"`, ""},
		{"two JSON values", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 100}} {}`, 400, "invalid JSON", ""},
		{"weight not a number", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": "100"}}`, 400, "must be a number", ""},
		{"no body", "PUT", "/api/v1/routes/shop/weights", "", 400, "a JSON body is required", ""},
		{"no weights", "PUT", "/api/v1/routes/shop/weights", `{}`, 400, "weights are required", ""},
		{"weights not totalling 100", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 60, "green": 30}}`, 400, "must total 100", ""},
		{"weights of an unknown version", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 50, "red": 50}}`, 400, `no version "red"`, ""},
		{"weight with three decimals", "PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 99.995, "green": 0.005}}`, 400, "weight of", ""},
		{"body over 1 MiB", "PUT", "/api/v1/routes/shop/weights", big, 400, "larger than", ""},
		{"switch to an unknown version", "POST", "/api/v1/routes/shop/switch", `{"version": "red"}`, 400, `no version "red"`, ""},
		{"switch without a version", "POST", "/api/v1/routes/shop/switch", `{}`, 400, "version is required", ""},
		{"switch with no body", "POST", "/api/v1/routes/shop/switch", "", 400, "a JSON body is required", ""},
		{"promote an unknown version", "POST", "/api/v1/routes/shop/promote", `{"version": "red"}`, 400, `no version "red"`, ""},
		{"promote with nothing to promote", "POST", "/api/v1/routes/three/promote", `{}`, 409, "nothing to promote", ""},
		{"rollback with a body", "POST", "/api/v1/routes/shop/rollback", `{"version": "blue"}`, 400, `unknown field "version"`, ""},
		{"pause without steps", "POST", "/api/v1/routes/shop/pause", "", 409, "no stepped rollout", ""},
		{"resume when not paused", "POST", "/api/v1/routes/steps/resume", "", 409, "not paused", ""},
		{"undo to the current revision", "POST", "/api/v1/routes/shop/undo", `{"revision": 1}`, 409, "already the current one", ""},
		{"undo to an unknown revision", "POST", "/api/v1/routes/shop/undo", `{"revision": 42}`, 404, "no revision 42", ""},
		{"undo to revision 0", "POST", "/api/v1/routes/shop/undo", `{"revision": 0}`, 400, "revision must be 1 or more", ""},
		{"undo to a fraction", "POST", "/api/v1/routes/shop/undo", `{"revision": 1.5}`, 400, "must be a number", ""},
		{"events limit not a number", "GET", "/api/v1/events?limit=x", "", 400, "limit must be", ""},
	}
	f := newFixture(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, h, body := f.do(tt.method, tt.path, tt.body)
			if code != tt.want {
				t.Fatalf("status %d, want %d; body %s", code, tt.want, body)
			}
			var e map[string]string
			if err := json.Unmarshal(body, &e); err != nil || len(e) != 1 || e["error"] == "" {
				t.Fatalf("body %q is not {\"error\": \"message\"} (%v)", body, err)
			}
			if !strings.Contains(e["error"], tt.wantInErr) {
				t.Errorf("error %q does not contain %q", e["error"], tt.wantInErr)
			}
			if strings.Contains(e["error"], "rollout:") {
				t.Errorf("error %q shows the Go sentinel's prefix", e["error"])
			}
			if got := h.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
	// Nothing above changed the route.
	var r rollout.RouteView
	f.json("GET", "/api/v1/routes/shop", "", 200, &r)
	if r.Revision != 1 {
		t.Errorf("failed requests moved shop to revision %d", r.Revision)
	}
}

func TestToken(t *testing.T) {
	f := newFixture(t, func(o *admin.Options) { o.Token = "s3cret" })
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"missing", "", 401},
		{"wrong", "Bearer nope", 401},
		{"longer", "Bearer s3cret-and-more", 401},
		{"prefix", "Bearer s3cre", 401},
		{"basic scheme", "Basic czNjcmV0", 401},
		{"no scheme", "s3cret", 401},
		{"right", "Bearer s3cret", 200},
		{"scheme is case-insensitive", "bearer s3cret", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.auth != "" {
				hdr = []string{"Authorization", tt.auth}
			}
			for _, p := range []string{"/api/v1/routes", "/api/v1/nope", "/api/v1/events/stream?x"} {
				if tt.want == 200 && p != "/api/v1/routes" {
					continue // the stream would not end; 404 is tested elsewhere
				}
				code, h, body := f.do("GET", p, "", hdr...)
				if code != tt.want {
					t.Errorf("GET %s: status %d, want %d; body %s", p, code, tt.want, body)
				}
				if tt.want == 401 {
					if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("GET %s: WWW-Authenticate = %q, want Bearer", p, h.Get("WWW-Authenticate"))
					}
					if !strings.Contains(string(body), `"error"`) {
						t.Errorf("GET %s: 401 body %s is not a JSON error", p, body)
					}
				}
			}
		})
	}
	// A mutation needs the token too, and nothing changes without it.
	if code, _, _ := f.do("POST", "/api/v1/routes/shop/switch", `{"version": "green"}`); code != 401 {
		t.Errorf("switch without token: %d, want 401", code)
	}
	if code, _, body := f.do("POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, "Authorization", "Bearer s3cret"); code != 200 {
		t.Errorf("switch with token: %d %s", code, body)
	}
	// The token is for /api/ only.
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/"} {
		if code, _, _ := f.do("GET", p, ""); code != 200 {
			t.Errorf("GET %s without token: %d, want 200", p, code)
		}
	}
	// With a token, any Host is fine (the token is the guard).
	if code, _, _ := f.do("GET", "/api/v1/routes", "", "Authorization", "Bearer s3cret", "Host", "veer.internal:9901"); code != 200 {
		t.Errorf("GET with a host name and the token: %d, want 200", code)
	}
}

func TestBrowserGuards(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name    string
		method  string
		path    string
		headers []string
		want    int
	}{
		{"cross-site POST", "POST", "/api/v1/routes/shop/rollback", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"cross-origin POST", "POST", "/api/v1/routes/shop/rollback", []string{"Origin", "https://evil.example"}, 403},
		{"same-origin POST", "POST", "/api/v1/routes/shop/rollback", []string{"Sec-Fetch-Site", "same-origin"}, 200},
		{"cross-site GET is harmless", "GET", "/api/v1/routes", []string{"Sec-Fetch-Site", "cross-site"}, 200},
		{"DNS rebinding host", "GET", "/api/v1/routes", []string{"Host", "evil.example:9901"}, 403},
		{"localhost", "GET", "/api/v1/routes", []string{"Host", "localhost:9901"}, 200},
		{"IPv6 literal", "GET", "/api/v1/routes", []string{"Host", "[::1]:9901"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := f.do(tt.method, tt.path, "", tt.headers...)
			if code != tt.want {
				t.Errorf("status %d, want %d; body %s", code, tt.want, body)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(o *admin.Options) { o.RateLimit = 1 }) // burst 2
	for i := range 2 {
		if code, _, body := f.do("GET", "/api/v1/routes", ""); code != 200 {
			t.Fatalf("request %d within the burst: %d %s", i+1, code, body)
		}
	}
	code, h, body := f.do("GET", "/api/v1/routes", "")
	if code != 429 {
		t.Fatalf("request after the burst: %d, want 429", code)
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After = %q, want a whole number of seconds >= 1", h.Get("Retry-After"))
	}
	if !strings.Contains(string(body), `"error"`) {
		t.Errorf("429 body %s is not a JSON error", body)
	}
	// Not for /metrics and the health endpoints.
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/healthz", "/healthz"} {
		if code, _, _ := f.do("GET", p, ""); code != 200 {
			t.Errorf("GET %s while limited: %d, want 200", p, code)
		}
	}
}

func TestRateLimitIsPerClient(t *testing.T) {
	m := metrics.New()
	h := admin.New(admin.Options{Controller: newController(t, m), Metrics: m, RateLimit: 1, Log: slog.New(slog.DiscardHandler)})
	get := func(ip string) int {
		req := httptest.NewRequest("GET", "http://127.0.0.1:9901/api/v1/routes", nil)
		req.RemoteAddr = ip + ":40000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 2 {
		if c := get("192.0.2.1"); c != 200 {
			t.Fatalf("client A request %d: %d", i+1, c)
		}
	}
	if c := get("192.0.2.1"); c != 429 {
		t.Errorf("client A over its burst: %d, want 429", c)
	}
	if c := get("192.0.2.2"); c != 200 {
		t.Errorf("client B is limited by A's requests: %d, want 200", c)
	}
}

func TestConfigInfo(t *testing.T) {
	f := newFixture(t, nil)
	var got map[string]any
	f.json("GET", "/api/v1/config", "", 200, &got)
	for _, k := range []string{"file", "loaded_at", "last_error"} {
		if _, ok := got[k]; !ok {
			t.Errorf("config info lacks %q: %v", k, got)
		}
	}
	if !strings.HasSuffix(got["file"].(string), "veer.yaml") || got["last_error"] != "" {
		t.Errorf("config info = %v", got)
	}
	f.ctrl.ReloadFailed(&config.Problem{File: "veer.yaml", Line: 3, Msg: "bad"})
	f.json("GET", "/api/v1/config", "", 200, &got)
	if !strings.Contains(got["last_error"].(string), "veer.yaml:3: bad") {
		t.Errorf("last_error = %q after a failed reload", got["last_error"])
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t, nil)
	f.json("POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, 200, nil)
	f.json("POST", "/api/v1/routes/shop/rollback", "", 200, nil)
	var got struct{ Events []map[string]any }
	f.json("GET", "/api/v1/events", "", 200, &got)
	if len(got.Events) < 2 {
		t.Fatalf("%d events, want at least 2", len(got.Events))
	}
	last, prev := got.Events[len(got.Events)-1], got.Events[len(got.Events)-2]
	if prev["type"] != "switch" || last["type"] != "rollback" {
		t.Errorf("last two events are %v, %v; want switch then rollback (newest last)", prev["type"], last["type"])
	}
	for _, k := range []string{"time", "route", "type", "message"} {
		if _, ok := last[k]; !ok {
			t.Errorf("EVENT lacks %q: %v", k, last)
		}
	}
	if last["route"] != "shop" || !strings.Contains(last["message"].(string), "admin API client 127.0.0.1") {
		t.Errorf("rollback event = %v", last)
	}
	f.json("GET", "/api/v1/events?limit=1", "", 200, &got)
	if len(got.Events) != 1 || got.Events[0]["type"] != "rollback" {
		t.Errorf("limit=1 gave %v, want the rollback only", got.Events)
	}
	f.json("GET", "/api/v1/events?route=steps", "", 200, &got)
	if len(got.Events) != 0 {
		t.Errorf("route=steps gave %v, want none", got.Events)
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event, data string
}

// readSSE reads events and comments from r onto the returned channel
// until r ends.
func readSSE(r io.Reader) (<-chan sseEvent, <-chan string) {
	evc, comments := make(chan sseEvent, 100), make(chan string, 100)
	go func() {
		defer close(evc)
		sc := bufio.NewScanner(r)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e != (sseEvent{}) {
					evc <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, ":"):
				select {
				case comments <- line:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				e.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				e.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = line[6:]
			}
		}
	}()
	return evc, comments
}

func openStream(t *testing.T, f *fixture, ctx context.Context, headers ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/api/v1/events/stream", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

func next(t *testing.T, evc <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case e, ok := <-evc:
		if !ok {
			t.Fatal("the stream ended")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event in 5s")
	}
	return sseEvent{}
}

func TestEventStream(t *testing.T) {
	f := newFixture(t, func(o *admin.Options) { o.Heartbeat = 20 * time.Millisecond })
	f.json("POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, 200, nil) // before subscribing

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := openStream(t, f, ctx)
	defer resp.Body.Close()
	evc, comments := readSSE(resp.Body)

	first := next(t, evc)
	if first.event != "switch" {
		t.Fatalf("first event %q, want the switch made before subscribing", first.event)
	}
	// After subscribing.
	f.json("POST", "/api/v1/routes/shop/rollback", "", 200, nil)
	e := next(t, evc)
	if e.event != "rollback" {
		t.Fatalf("live event %q, want rollback", e.event)
	}
	var ev events.Event
	if err := json.Unmarshal([]byte(e.data), &ev); err != nil {
		t.Fatalf("data %q is not an EVENT: %v", e.data, err)
	}
	if ev.Type != "rollback" || ev.Route != "shop" || ev.Time.IsZero() || !strings.Contains(ev.Message, "admin API client") {
		t.Errorf("event = %+v", ev)
	}
	if e.id != strconv.FormatUint(ev.Seq, 10) {
		t.Errorf("id %q, want the seq %d", e.id, ev.Seq)
	}
	deadline := time.After(5 * time.Second)
	for got := false; !got; {
		select {
		case c := <-comments:
			got = c == ": heartbeat"
		case <-deadline:
			t.Fatal("no heartbeat in 5s")
		}
	}

	// Reconnecting with Last-Event-ID sends only what came after it.
	f.json("POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, 200, nil)
	resp2 := openStream(t, f, ctx, "Last-Event-ID", e.id)
	defer resp2.Body.Close()
	evc2, _ := readSSE(resp2.Body)
	if e2 := next(t, evc2); e2.event != "switch" {
		t.Errorf("after Last-Event-ID %s the first event is %q, want the later switch", e.id, e2.event)
	}

	// The handlers end when their clients go away: Close waits for them.
	cancel()
	closed := make(chan struct{})
	go func() { f.srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream handler did not end after its client went away")
	}
}

func TestHealthAndMetrics(t *testing.T) {
	ready := true
	f := newFixture(t, func(o *admin.Options) { o.Ready = func() bool { return ready } })
	if code, _, body := f.do("GET", "/healthz", ""); code != 200 || string(body) != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, _, _ := f.do("GET", "/readyz", ""); code != 200 {
		t.Errorf("readyz: %d", code)
	}
	ready = false
	if code, _, _ := f.do("GET", "/readyz", ""); code != 503 {
		t.Errorf("readyz while draining: %d, want 503", code)
	}
	code, _, body := f.do("GET", "/metrics", "")
	if code != 200 || !strings.Contains(string(body), "veer_route_revision") {
		t.Errorf("metrics: %d, veer_route_revision missing", code)
	}
}

func TestDashboard(t *testing.T) {
	f := newFixture(t, nil)
	code, h, body := f.do("GET", "/", "")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", code, h.Get("Content-Type"))
	}
	if !strings.Contains(string(body), "/dashboard/app.js") {
		t.Errorf("the page does not load its script")
	}
	if !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("CSP = %q", h.Get("Content-Security-Policy"))
	}
	code, _, body = f.do("GET", "/dashboard/app.js", "")
	if code != 200 || !strings.Contains(string(body), "/api/v1/routes") {
		t.Errorf("app.js: %d, does not read /api/v1/routes", code)
	}
	if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
		t.Errorf("app.js loads something from another origin")
	}
	if code, _, _ := f.do("GET", "/nope", ""); code != 404 {
		t.Errorf("GET /nope: %d, want 404", code)
	}
}

func TestPanicIsA500(t *testing.T) {
	m := metrics.New()
	// No controller: every API handler dereferences nil, a stand-in for a bug.
	srv := httptest.NewServer(admin.New(admin.Options{Metrics: m, Log: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), `"error"`) {
		t.Errorf("panic answered %d %s, want a 500 JSON error", resp.StatusCode, body)
	}
	// The server still serves.
	resp, err = http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after a panic: %v", err)
	}
	resp.Body.Close()
	mf, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range mf {
		if f.GetName() == "veer_panics_total" && f.Metric[0].GetCounter().GetValue() != 1 {
			t.Errorf("veer_panics_total = %v, want 1", f.Metric[0].GetCounter().GetValue())
		}
	}
}

func TestEventStreamHead(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "HEAD", f.srv.URL+"/api/v1/events/stream", nil)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("HEAD of the stream: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("HEAD: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
