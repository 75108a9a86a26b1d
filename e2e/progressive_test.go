package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, url, body string) int {
	t.Helper()
	resp, err := client.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// getCookie sends a GET with an optional cookie and returns the version that
// served and the Set-Cookie header.
func getCookie(t *testing.T, url, cookie string) (string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("X-Veer-Version"), resp.Header.Get("Set-Cookie")
}

// TestStickyCookieAndDrain: veer pins browsers with a cookie; after a
// switch, sessions pinned to the old version keep going there for the drain
// time; a rollback never drains.
func TestStickyCookieAndDrain(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      green: {backends: [%q]}
    weights: {blue: 100, green: 0}
    sticky: {cookie: veer_v, drain: 2s}
`, blue.Addr, green.Addr))
	ver, set := getCookie(t, v.ProxyURL()+"/", "")
	if ver != "blue" {
		t.Fatalf("served by %s", ver)
	}
	for _, want := range []string{"veer_v=blue", "HttpOnly", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(strings.ToLower(set), strings.ToLower(want)) { // attribute names are case-insensitive
			t.Errorf("Set-Cookie %q lacks %q", set, want)
		}
	}
	if code := post(t, v.AdminURL()+"/api/v1/routes/shop/switch", `{"version":"green"}`); code != 200 {
		t.Fatalf("switch: %d", code)
	}
	start := time.Now()
	if ver, _ := getCookie(t, v.ProxyURL()+"/", "veer_v=blue"); ver != "blue" {
		t.Errorf("pinned session left blue during the drain: %s", ver)
	}
	if ver, _ := getCookie(t, v.ProxyURL()+"/", ""); ver != "green" {
		t.Errorf("new session went to %s after the switch, want green", ver)
	}
	Eventually(t, 5*time.Second, "the drain to end", func() bool {
		ver, _ := getCookie(t, v.ProxyURL()+"/", "veer_v=blue")
		return ver == "green"
	})
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("drain ended after %s, want about 2s", took)
	}
	// A rollback takes green to 0 with no drain: its sessions move at once.
	if code := post(t, v.AdminURL()+"/api/v1/routes/shop/rollback", `{}`); code != 200 {
		t.Fatalf("rollback: %d", code)
	}
	if ver, _ := getCookie(t, v.ProxyURL()+"/", "veer_v=green"); ver != "blue" {
		t.Errorf("after rollback a green-pinned session went to %s, want blue", ver)
	}
}

// TestBlueGreenSwitchIsGuarded: after a switch, the automatic rollback
// guards the new version until it is promoted.
func TestBlueGreenSwitchIsGuarded(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	green.FailEvery(2)
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      green: {backends: [%q]}
    weights: {blue: 100, green: 0}
    rollback: {window: 3s, min_requests: 20}
`, blue.Addr, green.Addr))
	if code := post(t, v.AdminURL()+"/api/v1/routes/shop/switch", `{"version":"green"}`); code != 200 {
		t.Fatalf("switch: %d", code)
	}
	Eventually(t, 10*time.Second, "the bad green to be rolled back to blue", func() bool {
		_, ver, _ := Get(t, v.ProxyURL()+"/")
		return ver == "blue" && metricValue(t, v.AdminURL(), "veer_route_weight_percent", "route=shop", "version=green") == 0
	})
	if got := metricValue(t, v.AdminURL(), "veer_rollbacks_total", "route=shop", "version=green", "reason=error-rate"); got != 1 {
		t.Errorf("rollbacks of green = %v, want 1", got)
	}
}

// TestDarkLaunchWhileRamping: header (regex), cookie and query rules and the
// override header send testers to the canary while real users ramp by weight.
func TestDarkLaunchWhileRamping(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 100, canary: 0}
    candidate: canary
    sticky: {header: X-User-ID}
    rules:
      - {header: X-Beta, regex: "^(1|true|yes)$", version: canary}
      - {cookie: beta, equals: "on", version: canary}
      - {query: preview, version: canary}
    steps:
      - set_weight: 5
      - pause: {}
`, blue.Addr, canary.Addr))
	Eventually(t, 5*time.Second, "the first step", func() bool {
		return metricValue(t, v.AdminURL(), "veer_route_weight_percent", "route=shop", "version=canary") == 5
	})
	cases := []struct {
		name    string
		url     string
		headers []string
		want    string
	}{
		{"header rule", "/", []string{"X-Beta", "true", "X-User-ID", "u1"}, "canary"},
		{"header rule not matching", "/", []string{"X-Beta", "nope", "X-User-ID", "u-stable"}, ""},
		{"cookie rule", "/", []string{"Cookie", "beta=on"}, "canary"},
		{"query rule", "/?preview", nil, "canary"},
		{"override header", "/", []string{"X-Veer-Version", "canary"}, "canary"},
		{"override to stable beats the rule", "/", []string{"X-Veer-Version", "blue", "X-Beta", "1"}, "blue"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := 0; i < 20; i++ {
				_, ver, _ := Get(t, v.ProxyURL()+c.url, c.headers...)
				if c.want != "" && ver != c.want {
					t.Fatalf("request %d served by %s, want %s", i, ver, c.want)
				}
			}
		})
	}
	// Real users ramp by weight: about 5% of distinct users on the canary.
	n, onCanary := 2000, 0
	for i := 0; i < n; i++ {
		if _, ver, _ := Get(t, v.ProxyURL()+"/", "X-User-ID", fmt.Sprintf("user-%d", i)); ver == "canary" {
			onCanary++
		}
	}
	// Binomial(2000, 0.05): mean 100, sd ~9.7; 5 sd either side.
	if onCanary < 50 || onCanary > 150 {
		t.Errorf("%d of %d users on the canary at 5%%", onCanary, n)
	}
}

// TestMirror: a share of requests is copied to the mirror version; its
// answers (here all 500) are discarded, never reach the client, never count
// against the version's rollback window, and are counted under
// veer_mirror_requests_total.
func TestMirror(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	canary.status.Store(500)
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 100, canary: 0}
    mirror: {version: canary, percent: 25}
    rollback: {window: 5s, min_requests: 5}
`, blue.Addr, canary.Addr))
	for i := 0; i < 200; i++ {
		code, ver, body := Get(t, v.ProxyURL()+fmt.Sprintf("/item/%d", i), "X-Test", "mirrored")
		if code != 200 || ver != "blue" || body != "blue\n" {
			t.Fatalf("request %d: %d %s %q", i, code, ver, body)
		}
	}
	Eventually(t, 10*time.Second, "50 mirrored copies", func() bool { return canary.Hits.Load() == 50 })
	h, _, uri := canary.Last()
	if h.Get("X-Test") != "mirrored" || !strings.HasPrefix(uri, "/item/") || h.Get("X-Forwarded-For") == "" {
		t.Errorf("mirrored copy lost its headers or path: %v %s", h, uri)
	}
	if got := metricValue(t, v.AdminURL(), "veer_mirror_requests_total", "route=shop", "version=canary", "code=5xx"); got != 50 {
		t.Errorf("veer_mirror_requests_total{5xx} = %v, want 50", got)
	}
	if got := metricValue(t, v.AdminURL(), "veer_requests_total", "route=shop", "version=canary"); got != 0 {
		t.Errorf("mirror answers counted as canary requests: %v", got)
	}
	if got := metricValue(t, v.AdminURL(), "veer_window_error_rate_percent", "route=shop", "version=canary"); got != 0 {
		t.Errorf("mirror answers reached the rollback window: %v", got)
	}
}
