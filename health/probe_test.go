package health

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestProberFlipsAfterThresholds(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	var probes atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if r.URL.Path != "/healthz" || !healthy.Load() {
			w.WriteHeader(503)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	var mu sync.Mutex
	var changes []bool
	p := NewProber(slog.New(slog.NewTextHandler(io.Discard, nil)), func(id string, up bool) {
		mu.Lock()
		changes = append(changes, up)
		mu.Unlock()
	}, nil)
	t.Cleanup(p.Stop)
	st := NewBackendState()
	p.Set([]Target{{ID: "shop/blue/x", Addr: ln.Addr().String(), Path: "/healthz", Interval: 10 * time.Millisecond,
		Timeout: time.Second, Healthy: 2, Unhealthy: 3, State: st}})

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("a few probes", func() bool { return probes.Load() >= 3 })
	if !st.Up() {
		t.Fatal("a healthy backend was marked down")
	}
	healthy.Store(false)
	at := probes.Load()
	waitFor("the backend to go down", func() bool { return !st.Up() })
	if n := probes.Load() - at; n < 3 {
		t.Errorf("down after %d failed probes, want at least unhealthy=3", n)
	}
	healthy.Store(true)
	waitFor("the backend to come back", func() bool { return st.Up() })
	mu.Lock()
	got := append([]bool(nil), changes...)
	mu.Unlock()
	if len(got) != 2 || got[0] != false || got[1] != true {
		t.Errorf("changes = %v, want [false true]", got)
	}
	// Removing the target stops probing.
	p.Set(nil)
	time.Sleep(50 * time.Millisecond)
	n := probes.Load()
	time.Sleep(100 * time.Millisecond)
	if probes.Load() != n {
		t.Errorf("probes continued after the target was removed")
	}
}

func TestProberSharesOneProbePerAddress(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	var probes atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if !healthy.Load() {
			w.WriteHeader(503)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	var mu sync.Mutex
	downs := map[string]bool{}
	p := NewProber(slog.New(slog.NewTextHandler(io.Discard, nil)), func(id string, up bool) {
		mu.Lock()
		downs[id] = !up
		mu.Unlock()
	}, nil)
	t.Cleanup(p.Stop)
	target := func(id, path string) Target {
		return Target{ID: id, Addr: ln.Addr().String(), Path: path, Interval: time.Hour,
			Timeout: time.Second, Healthy: 1, Unhealthy: 1, State: NewBackendState()}
	}
	// Three routes on one address with the same check, a fourth with its own path.
	ts := []Target{target("a/blue/x", "/healthz"), target("b/blue/x", "/healthz"), target("c/green/x", "/healthz"), target("d/blue/x", "/ready")}
	healthy.Store(false)
	p.Set(ts)
	if n := p.Probes(); n != 2 {
		t.Fatalf("%d probes for one address and two paths, want 2", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(downs)
		mu.Unlock()
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %v went down", downs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, tg := range ts {
		if tg.State.Up() {
			t.Errorf("%s is still up after a failed shared probe", tg.ID)
		}
	}
	// With an hour's interval, each probe ran once at its start.
	if n := probes.Load(); n != 2 {
		t.Errorf("the server saw %d probes, want 2 (one per distinct check)", n)
	}
	// Setting the same targets again keeps the probes; dropping one route restarts its probe.
	running := func(tg Target) *probe {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.running[tg.key()]
	}
	shared, own := running(ts[0]), running(ts[3])
	p.Set(ts)
	if running(ts[0]) != shared || running(ts[3]) != own {
		t.Error("an unchanged Set restarted a probe")
	}
	p.Set(ts[1:])
	if n := p.Probes(); n != 2 {
		t.Errorf("%d probes after dropping one route, want 2", n)
	}
	if running(ts[1]) == shared || running(ts[3]) != own {
		t.Error("dropping a route should restart only the probe it shared")
	}
}
