package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adminCall sends a request to veer's admin API with an optional JSON body
// and bearer token, and returns the status and the body.
func adminCall(t *testing.T, v *Veer, method, path, body, token string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, v.AdminURL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

// adminJSON is adminCall for a call that must answer 200 with JSON.
func adminJSON(t *testing.T, v *Veer, method, path, body string, out any) {
	t.Helper()
	code, data := adminCall(t, v, method, path, body, "")
	if code != 200 {
		t.Fatalf("%s %s: status %d: %s", method, path, code, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("%s %s: not JSON: %v: %s", method, path, err, data)
	}
}

// adminChange is the answer of a mutation.
type adminChange struct {
	Route struct {
		Name     string             `json:"name"`
		Revision int                `json:"revision"`
		Weights  map[string]float64 `json:"weights"`
		Stable   string             `json:"stable"`
	} `json:"route"`
	Revision struct {
		Revision int                `json:"revision"`
		Weights  map[string]float64 `json:"weights"`
		Source   string             `json:"source"`
		Reason   string             `json:"reason"`
	} `json:"revision"`
	Changed bool `json:"changed"`
}

// sendAll sends n requests through veer and fails unless every one was
// served by version want, at its backend.
func sendAll(t *testing.T, v *Veer, n int, want *Backend, others ...*Backend) {
	t.Helper()
	before := want.Hits.Load()
	var otherBefore []int64
	for _, o := range others {
		otherBefore = append(otherBefore, o.Hits.Load())
	}
	for i := range n {
		code, ver, body := Get(t, v.ProxyURL()+"/")
		if code != 200 || ver != want.Name || strings.TrimSpace(body) != want.Name {
			t.Fatalf("request %d: status %d, served by %q (%q), want %s", i+1, code, ver, strings.TrimSpace(body), want.Name)
		}
	}
	if got := want.Hits.Load() - before; got != int64(n) {
		t.Errorf("backend %s got %d of %d requests", want.Name, got, n)
	}
	for i, o := range others {
		if got := o.Hits.Load() - otherBefore[i]; got != 0 {
			t.Errorf("backend %s got %d requests, want none", o.Name, got)
		}
	}
}

// blueGreenConfig is a route shop with blue at 100% and green at 0;
// adminExtra is added to the admin mapping (", token_file: ...").
func blueGreenConfig(blue, green *Backend, adminExtra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0%s}
routes:
  - name: shop
    stable: blue
    versions:
      blue:  {backends: [%q]}
      green: {backends: [%q]}
    weights: {blue: 100, green: 0}
`, adminExtra, blue.Addr, green.Addr)
}

func TestAdminSwitchAndUndo(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	v := StartVeer(t, blueGreenConfig(blue, green, ""))
	sendAll(t, v, 20, blue, green)

	var ch adminChange
	adminJSON(t, v, "POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, &ch)
	if !ch.Changed || ch.Revision.Revision != 2 || ch.Route.Weights["green"] != 100 || ch.Revision.Source != "admin" {
		t.Fatalf("switch answered %+v", ch)
	}
	if !strings.Contains(ch.Revision.Reason, "admin API client 127.0.0.1") {
		t.Errorf("the revision does not name the client: %q", ch.Revision.Reason)
	}
	sendAll(t, v, 50, green, blue) // the switch is live on the answer

	adminJSON(t, v, "POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, &ch)
	if ch.Changed || ch.Revision.Revision != 2 {
		t.Errorf("a second identical switch: changed %v revision %d, want false 2", ch.Changed, ch.Revision.Revision)
	}

	adminJSON(t, v, "POST", "/api/v1/routes/shop/undo", `{}`, &ch)
	if !ch.Changed || ch.Revision.Revision != 3 || ch.Revision.Source != "undo" || ch.Revision.Weights["blue"] != 100 {
		t.Fatalf("undo answered %+v", ch)
	}
	sendAll(t, v, 50, blue, green)

	adminJSON(t, v, "POST", "/api/v1/routes/shop/undo", `{"revision": 2}`, &ch)
	if ch.Revision.Revision != 4 || ch.Route.Weights["green"] != 100 {
		t.Fatalf("undo to revision 2 answered %+v", ch)
	}
	sendAll(t, v, 20, green, blue)

	var hist struct {
		Revisions []struct {
			Revision int    `json:"revision"`
			Source   string `json:"source"`
		} `json:"revisions"`
	}
	adminJSON(t, v, "GET", "/api/v1/routes/shop/history", "", &hist)
	var got []string
	for _, r := range hist.Revisions {
		got = append(got, fmt.Sprintf("%d:%s", r.Revision, r.Source))
	}
	if strings.Join(got, " ") != "1:file 2:admin 3:undo 4:undo" {
		t.Errorf("history = %v", got)
	}

	var evs struct {
		Events []struct{ Route, Type, Message string } `json:"events"`
	}
	adminJSON(t, v, "GET", "/api/v1/events", "", &evs)
	var types []string
	for _, e := range evs.Events {
		if e.Route == "shop" {
			types = append(types, e.Type)
		}
	}
	if strings.Join(types, " ") != "switch undo undo" {
		t.Errorf("shop's events = %v, want switch undo undo", types)
	}

	// The admin change survives a restart.
	v.Stop()
	v2 := StartVeerIn(t, v.Dir, v.ConfigPath)
	var route struct {
		Revision int `json:"revision"`
	}
	adminJSON(t, v2, "GET", "/api/v1/routes/shop", "", &route)
	if route.Revision != 4 {
		t.Errorf("after a restart shop is at revision %d, want 4", route.Revision)
	}
	sendAll(t, v2, 20, green, blue)
}

func TestAdminErrorsOnBinary(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	v := StartVeer(t, blueGreenConfig(blue, green, ""))
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/api/v1/routes/nope", "", 404},
		{"GET", "/api/v1/nope", "", 404},
		{"DELETE", "/api/v1/routes/shop", "", 405},
		{"PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 50}}`, 400},
		{"PUT", "/api/v1/routes/shop/weights", `{"weights": {"blue": 100}, "x": 1}`, 400},
		{"POST", "/api/v1/routes/shop/switch", `{"version": "red"}`, 400},
		{"POST", "/api/v1/routes/shop/pause", "", 409},
	} {
		code, body := adminCall(t, v, tt.method, tt.path, tt.body, "")
		if code != tt.want || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s %s: %d %s, want %d with a JSON error", tt.method, tt.path, code, body, tt.want)
		}
	}
	sendAll(t, v, 10, blue, green) // nothing changed
}

func TestAdminToken(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("e2e-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := StartVeer(t, blueGreenConfig(blue, green, fmt.Sprintf(", token_file: %q", tokenFile)))
	if code, _ := adminCall(t, v, "POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, ""); code != 401 {
		t.Errorf("switch without token: %d, want 401", code)
	}
	if code, _ := adminCall(t, v, "POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, "wrong"); code != 401 {
		t.Errorf("switch with a wrong token: %d, want 401", code)
	}
	sendAll(t, v, 10, blue, green)
	if code, body := adminCall(t, v, "POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, "e2e-token-0123456789"); code != 200 {
		t.Fatalf("switch with the token: %d %s", code, body)
	}
	sendAll(t, v, 10, green, blue)
	if code, _ := adminCall(t, v, "GET", "/healthz", "", ""); code != 200 {
		t.Errorf("healthz needs no token: %d", code)
	}
}

func TestAdminEventStreamOnBinary(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	v := StartVeer(t, blueGreenConfig(blue, green, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", v.AdminURL()+"/api/v1/events/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// Wait until the stream is live, then change something.
	for l := range lines {
		if strings.HasPrefix(l, ": veer events: live") {
			break
		}
	}
	adminJSON(t, v, "POST", "/api/v1/routes/shop/switch", `{"version": "green"}`, &adminChange{})
	for l := range lines {
		if l == "event: switch" {
			data := <-lines
			var e struct{ Route, Type string }
			if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &e); err != nil || e.Route != "shop" || e.Type != "switch" {
				t.Fatalf("data line %q (%v)", data, err)
			}
			return
		}
	}
	t.Fatal("the stream ended without the switch event")
}
