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
