package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestNoRequestDroppedUnderReloadsAndSwitches: 16 keep-alive clients send
// requests for a bounded time on loopback while the config is reloaded 50
// times and the route switched 50 times between blue and green. Every
// request must be answered 2xx with no connection error.
func TestNoRequestDroppedUnderReloadsAndSwitches(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	base := reloadConfig(blue, green, 100, 0)
	v := StartVeer(t, base)

	const clients = 16
	duration := 10 * time.Second
	if testing.Short() {
		duration = 3 * time.Second
	}
	var ok, bad, connErr atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for n := 0; n < 200000; n++ { // bounded
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(v.ProxyURL() + "/")
				if err != nil {
					connErr.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					ok.Add(1)
				} else {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
				}
			}
		}()
	}

	// 50 reloads (each a real change: a comment and the rollback window)
	// interleaved with 50 switches through the admin API.
	interval := duration / 100
	for i := 0; i < 50; i++ {
		text := strings.Replace(base, "routes:", fmt.Sprintf("# edit %d\nroutes:", i), 1)
		writeFile(t, v.ConfigPath, text)
		v.Signal(syscall.SIGHUP) // the watcher sees it too; the same content is reloaded once
		time.Sleep(interval)
		target := "green"
		if i%2 == 1 {
			target = "blue"
		}
		body := fmt.Sprintf(`{"version":%q}`, target)
		resp, err := client.Post(v.AdminURL()+"/api/v1/routes/shop/switch", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("switch %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("switch %d: status %d", i, resp.StatusCode)
		}
		time.Sleep(interval)
	}
	close(stop)
	wg.Wait()

	total := ok.Load() + bad.Load() + connErr.Load()
	t.Logf("%d requests from %d clients: %d 2xx, %d other, %d connection errors; %d reloads",
		total, clients, ok.Load(), bad.Load(), connErr.Load(),
		int(metricValue(t, v.AdminURL(), "veer_config_reloads_total", "result=success")))
	if bad.Load() != 0 || connErr.Load() != 0 {
		t.Fatalf("dropped: %d non-2xx, %d connection errors (first: %v)", bad.Load(), connErr.Load(), firstErr.Load())
	}
	if total < 1000 {
		t.Errorf("only %d requests: the load did not run", total)
	}
	if blue.Hits.Load() == 0 || green.Hits.Load() == 0 {
		t.Errorf("switches did not move traffic: blue %d green %d", blue.Hits.Load(), green.Hits.Load())
	}
	if got := metricValue(t, v.AdminURL(), "veer_config_reloads_total", "result=success"); got != 50 {
		t.Errorf("%v reloads were applied, want 50", got)
	}
}
