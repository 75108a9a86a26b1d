package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

func TestMirrorDropsWhenFullAndSkipsLargeBodies(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: ["127.0.0.1:1"]}
      canary: {backends: ["127.0.0.1:2"]}
    weights: {blue: 100}
    mirror: {version: canary, percent: 100, max_body_bytes: 10}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	tab, err := router.Compile(cfg, nil, router.NewRegistry(m))
	if err != nil {
		t.Fatal(err)
	}
	r := tab.Route("shop")
	mr := newMirrorer(m)
	mr.started.Store(true) // no workers: the queue fills
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/x")
	for i := 0; i < mirrorQueue; i++ {
		mr.offer(&ctx, r)
	}
	if len(mr.jobs) != mirrorQueue || mr.dropped.Load() != 0 {
		t.Fatalf("queued %d dropped %d, want %d and 0", len(mr.jobs), mr.dropped.Load(), mirrorQueue)
	}
	mr.offer(&ctx, r)
	if mr.dropped.Load() != 1 || testutil.ToFloat64(m.MirrorDropped) != 1 {
		t.Errorf("full queue: dropped %d (metric %v), want 1", mr.dropped.Load(), testutil.ToFloat64(m.MirrorDropped))
	}
	ctx.Request.SetBodyString("more than ten bytes")
	mr.offer(&ctx, r)
	if mr.dropped.Load() != 1 {
		t.Errorf("a body over max_body_bytes was offered to the queue")
	}
	// Exactly the configured share is mirrored.
	n := 0
	for i := 0; i < 1000; i++ {
		if r.MirrorNow() {
			n++
		}
	}
	if n != 1000 {
		t.Errorf("percent 100 mirrored %d of 1000", n)
	}
}
