package e2e

import (
	"fmt"
	"testing"
)

func TestSmokeSplit(t *testing.T) {
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
    weights: {blue: 75, canary: 25}
`, blue.Addr, canary.Addr))
	got := map[string]int{}
	for i := 0; i < 400; i++ {
		code, ver, _ := Get(t, v.ProxyURL()+"/")
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		got[ver]++
	}
	// The ring interleaves exactly: 400 requests at 75/25 are 300/100.
	if got["blue"] != 300 || got["canary"] != 100 {
		t.Errorf("split = %v, want blue 300 canary 100", got)
	}
	if blue.Hits.Load() != 300 || canary.Hits.Load() != 100 {
		t.Errorf("backend hits blue=%d canary=%d", blue.Hits.Load(), canary.Hits.Load())
	}
}
