package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hookReceiver is a local webhook receiver that fails its first `fail`
// deliveries with 500.
type hookReceiver struct {
	URL   string
	fail  int64
	calls atomic.Int64
	mu    sync.Mutex
	got   []map[string]any
	keys  []string
}

func newHookReceiver(t *testing.T, fail int64) *hookReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hookReceiver{URL: "http://" + ln.Addr().String() + "/hook", fail: fail}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := h.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.keys = append(h.keys, r.Header.Get("Idempotency-Key"))
		h.mu.Unlock()
		if n <= h.fail {
			w.WriteHeader(500)
			return
		}
		var m map[string]any
		json.Unmarshal(body, &m)
		h.mu.Lock()
		h.got = append(h.got, m)
		h.mu.Unlock()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

func (h *hookReceiver) received() ([]map[string]any, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.got...), append([]string(nil), h.keys...)
}

// TestAutomaticRollbackEndToEnd: a canary at 20% answering 8% of its
// requests with 500 is taken out by veer itself; it stays out after a
// restart; a webhook receiver that fails twice gets the rollback on the
// third delivery.
func TestAutomaticRollbackEndToEnd(t *testing.T) {
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	canary.FailEvery(12) // 8.3%
	hook := newHookReceiver(t, 2)
	cfg := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
state_file: state.json
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 80, canary: 20}
    rollback: {max_error_rate: 5, window: 5s, min_requests: 20}
notify:
  webhooks:
    - {url: %q, events: [rollback]}
`, blue.Addr, canary.Addr, hook.URL)
	v := StartVeer(t, cfg)

	// Load until the canary is out; it must happen within window + 1s of
	// the load that shows it (plus the time to send min_requests).
	start := time.Now()
	var rolledAt, polled time.Time
	for i := 0; i < 20000 && rolledAt.IsZero(); i++ {
		Get(t, v.ProxyURL()+"/")
		// Look at most every 100ms: the admin API allows 20 requests a
		// second per client.
		if time.Since(polled) >= 100*time.Millisecond {
			polled = time.Now()
			var r struct{ Weights map[string]float64 }
			getJSON(t, v.AdminURL()+"/api/v1/routes/shop", &r)
			if r.Weights["canary"] == 0 {
				rolledAt = time.Now()
			}
		}
	}
	if rolledAt.IsZero() {
		t.Fatalf("canary never rolled back; log:\n%s", v.Log())
	}
	t.Logf("canary rolled back %s after the load started (window 5s)", rolledAt.Sub(start).Round(10*time.Millisecond))
	if took := rolledAt.Sub(start); took > 5*time.Second+time.Second+2*time.Second {
		t.Errorf("rollback took %s, want within window (5s) + 1s (+ slack for loading)", took)
	}

	// After the rollback no request reaches the canary.
	before := canary.Hits.Load()
	for i := 0; i < 300; i++ {
		if code, ver, _ := Get(t, v.ProxyURL()+"/"); code != 200 || ver != "blue" {
			t.Fatalf("after rollback: %d from %q", code, ver)
		}
	}
	if got := canary.Hits.Load() - before; got != 0 {
		t.Errorf("canary got %d requests after its rollback", got)
	}

	// The state file holds the revision.
	data, err := os.ReadFile(filepath.Join(v.Dir, "state.json"))
	if err != nil || !strings.Contains(string(data), `"auto-rollback"`) {
		t.Fatalf("state file: %v\n%s", err, data)
	}

	// The webhook arrives on the third delivery, with one idempotency key.
	Eventually(t, 20*time.Second, "the webhook", func() bool { got, _ := hook.received(); return len(got) == 1 })
	got, keys := hook.received()
	if got[0]["event"] != "rollback" || got[0]["route"] != "shop" || got[0]["version"] != "canary" ||
		!strings.Contains(fmt.Sprint(got[0]["reason"]), "error rate") {
		t.Errorf("webhook body = %v", got[0])
	}
	if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Errorf("idempotency keys over the 3 deliveries = %q", keys)
	}

	// Restart: the canary still gets nothing.
	v.Stop()
	v2 := StartVeerIn(t, v.Dir, v.ConfigPath)
	before = canary.Hits.Load()
	for i := 0; i < 300; i++ {
		if _, ver, _ := Get(t, v2.ProxyURL()+"/"); ver != "blue" {
			t.Fatalf("after restart served by %q", ver)
		}
	}
	if got := canary.Hits.Load() - before; got != 0 {
		t.Errorf("canary got %d requests after restart", got)
	}
	var r struct {
		Phase    string
		Revision int
	}
	getJSON(t, v2.AdminURL()+"/api/v1/routes/shop", &r)
	if r.Phase != "rolled-back" || r.Revision != 2 {
		t.Errorf("after restart phase %q revision %d, want rolled-back at 2", r.Phase, r.Revision)
	}
}

func getJSON(t *testing.T, url string, into any) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
