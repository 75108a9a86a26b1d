package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is the demo's output, read while the demo writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fastConfig is demo.yaml with the story shortened to seconds: the canary
// goes straight to 50% and the judge looks at a 2s window.
const fastConfig = `
listen: PROXY
admin: {listen: ADMIN}
state_file: veer-state.json
drain_timeout: 2s
routes:
  - name: shop
    stable: blue
    versions:
      blue:   {backends: ["BLUE"]}
      green:  {backends: ["GREEN"]}
      canary: {backends: ["CANARY"]}
    weights: {blue: 100, green: 0, canary: 0}
    candidate: canary
    sticky: {header: X-User-ID}
    steps:
      - set_weight: 50
      - pause: 1m
    rollback: {max_error_rate: 5, window: 2s, min_requests: 10}
    health_check: {path: /healthz, interval: 1s, timeout: 500ms}
`

// started runs the demo in the background and returns its output, its
// admin URL and a function that stops it and returns Run's error (failing
// the test if the stop takes more than 5s).
func started(t *testing.T, o Options) (*syncBuffer, string, func() error) {
	t.Helper()
	out := &syncBuffer{}
	o.Out = out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	stopped := false
	var runErr error
	stop := func() error {
		t.Helper()
		if stopped {
			return runErr
		}
		stopped = true
		cancel()
		select {
		case runErr = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("the demo did not stop within 5s of its context ending; output:\n%s", out)
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	re := regexp.MustCompile(`dashboard: (http://\S+)/`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return out, m[1], stop
		}
		select {
		case err := <-done:
			t.Fatalf("the demo ended before it started: %v; output:\n%s", err, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed no dashboard URL in 10s; output:\n%s", out)
		}
	}
}

type routeView struct {
	Revision int                `json:"revision"`
	Phase    string             `json:"phase"`
	Weights  map[string]float64 `json:"weights"`
	Versions map[string]struct {
		Requests uint64 `json:"requests"`
	} `json:"versions"`
}

func getRoute(t *testing.T, admin string) routeView {
	t.Helper()
	resp, err := http.Get(admin + "/api/v1/routes/shop")
	if err != nil {
		t.Fatalf("GET route: %v", err)
	}
	defer resp.Body.Close()
	var v routeView
	if resp.StatusCode != 200 {
		t.Fatalf("GET route: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET route: %v", err)
	}
	return v
}

// addrsOf returns the host:port of each URL printed under the demo's header.
func addrsOf(t *testing.T, out string) []string {
	t.Helper()
	var addrs []string
	for _, m := range regexp.MustCompile(`(?m)^  (?:dashboard|proxy): +(\S+)$`).FindAllStringSubmatch(out, -1) {
		u, err := url.Parse(m[1])
		if err != nil {
			t.Fatalf("bad URL %q: %v", m[1], err)
		}
		addrs = append(addrs, u.Host)
	}
	if len(addrs) != 2 {
		t.Fatalf("want the dashboard and proxy URLs in the output, got %q in:\n%s", addrs, out)
	}
	return addrs
}

func TestDemoRollsBackTheFailingCanary(t *testing.T) {
	start := time.Now()
	out, admin, stop := started(t, Options{FailAfter: 2 * time.Second, FailRate: 0.2, Config: fastConfig})
	addrs := addrsOf(t, out.String())
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		if host != "127.0.0.1" {
			t.Errorf("demo listens on %s, want loopback 127.0.0.1", a)
		}
	}

	rollback := regexp.MustCompile(`(?m)^\S+ +\+\d+s  rollback  shop  revision (\d+): canary: error rate [\d.]+% > 5% over 2s`)
	deadline := time.Now().Add(20 * time.Second)
	for !rollback.MatchString(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no automatic rollback of the canary printed within 20s; output:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("rolled back %s after the start", took.Round(100*time.Millisecond))
	if took < 2*time.Second {
		t.Errorf("rolled back after %s, before the canary started failing at 2s", took)
	}

	text := out.String()
	for _, want := range []string{
		"step      shop  revision 2: step 1/2: set_weight 50",
		"demo            the canary starts failing 20% of its requests",
		"veer took the failing canary out of traffic by itself",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if i, j := strings.Index(text, "starts failing"), strings.Index(text, "rollback  shop"); i < 0 || j < i {
		t.Errorf("the rollback is printed before the canary starts failing:\n%s", text)
	}

	v := getRoute(t, admin)
	if v.Weights["canary"] != 0 || v.Weights["blue"] != 100 || v.Phase != "rolled-back" {
		t.Errorf("after the rollback: weights %v, phase %q; want blue=100 canary=0, rolled-back", v.Weights, v.Phase)
	}
	if v.Versions["blue"].Requests == 0 {
		t.Errorf("no synthetic traffic reached blue: %+v", v.Versions)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run after the stop: %v, want nil", err)
	}
	if !strings.Contains(out.String(), "veer demo stopped after") {
		t.Errorf("no goodbye line:\n%s", out)
	}
	// Ctrl-C frees the ports: they can be listened on again at once.
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("port of %s still taken after the demo stopped: %v", a, err)
			continue
		}
		ln.Close()
	}
}

func TestDemoNoTrafficSendsNothing(t *testing.T) {
	out, admin, stop := started(t, Options{NoTraffic: true, FailAfter: 100 * time.Millisecond})
	// The embedded demo.yaml is valid and its first step runs.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "step 1/8: set_weight 10") {
		if time.Now().After(deadline) {
			t.Fatalf("the first step of demo.yaml did not run in 10s; output:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	v := getRoute(t, admin)
	for name, vv := range v.Versions {
		if vv.Requests != 0 {
			t.Errorf("-no-traffic: version %s got %d requests, want 0", name, vv.Requests)
		}
	}
	if strings.Contains(out.String(), "starts failing") {
		t.Errorf("-no-traffic: the canary was made to fail:\n%s", out)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after the stop: %v, want nil", err)
	}
}

func TestDemoListensOnLoopbackOnly(t *testing.T) {
	tests := []struct {
		name         string
		proxy, admin string
	}{
		{"any address", "0.0.0.0:0", ""},
		{"admin on all interfaces", "", ":9901"},
		{"a LAN address", "192.168.1.10:8080", ""},
		{"IPv6 any", "[::]:0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), Options{ProxyAddr: tt.proxy, AdminAddr: tt.admin, Out: &syncBuffer{}})
			if !errors.Is(err, ErrNotLoopback) {
				t.Errorf("Run(proxy %q, admin %q) = %v, want ErrNotLoopback", tt.proxy, tt.admin, err)
			}
		})
	}
	for _, ok := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.2:9"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("checkLoopback(%q) = %v, want nil", ok, err)
		}
	}
}
