package e2e

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown: on SIGTERM /readyz turns false, new connections are
// refused, and a slow request already in flight completes.
func TestGracefulShutdown(t *testing.T) {
	blue := NewBackend(t, "blue")
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
drain_timeout: 10s
routes:
  - name: shop
    versions:
      blue: {backends: [%q]}
`, blue.Addr))
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get(v.ProxyURL() + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		resp.Body.Close()
		done <- result{code: resp.StatusCode}
	}()
	Eventually(t, 5*time.Second, "the slow request to reach the backend", func() bool { return blue.Hits.Load() == 1 })
	v.Signal(syscall.SIGTERM)
	Eventually(t, 2*time.Second, "/readyz to turn false", func() bool {
		resp, err := client.Get(v.AdminURL() + "/readyz")
		if err != nil {
			return true // the admin listener may already be closed
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	Eventually(t, 2*time.Second, "new connections to be refused", func() bool {
		c, err := net.DialTimeout("tcp", v.ProxyAddr, 200*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case r := <-done:
		if r.err != nil || r.code != 200 {
			t.Fatalf("in-flight request: %d %v, want 200", r.code, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request did not finish")
	}
	if code, ok := v.Wait(15 * time.Second); !ok || code != 0 {
		t.Fatalf("exit code %d (exited %v), want 0\n%s", code, ok, v.Log())
	}
}
