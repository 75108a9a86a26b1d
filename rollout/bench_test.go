package rollout

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/events"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

// thousandRoutes is a config of 1,000 routes with three versions each.
func thousandRoutes(tb testing.TB) *config.Config {
	tb.Helper()
	var b strings.Builder
	b.WriteString("routes:\n")
	for i := range 1000 {
		fmt.Fprintf(&b, `  - name: svc-%d
    match: {host: svc-%d.example.com}
    stable: blue
    versions:
      blue: {backends: ["127.0.0.1:%d", "127.0.0.1:%d"]}
      green: {backends: ["127.0.0.1:%d"]}
      canary: {backends: ["127.0.0.1:%d"]}
    weights: {blue: 90, green: 0, canary: 10}
    sticky: {header: X-User-ID}
`, i, i, 10000+i, 20000+i, 30000+i, 40000+i)
	}
	cfg, err := config.Parse("bench.yaml", []byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// BenchmarkReload1000Routes is what a config reload of a 1,000-route file
// costs once it is parsed: every route compiled into a new table (weights
// ring, sticky layout, rules, backends looked up in the registry) and the
// table swapped in. Target (issue 7): under 50 ms.
func BenchmarkReload1000Routes(b *testing.B) {
	cfg := thousandRoutes(b)
	m := metrics.New()
	var published int
	c, err := New(Options{Config: cfg, Registry: router.NewRegistry(m), Metrics: m, Events: events.New(10, time.Now),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Publish: func(*router.Table) { published++ }})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Reload(cfg); err != nil {
			b.Fatal(err)
		}
	}
	if published < 2 {
		b.Fatalf("published %d tables", published)
	}
}

// BenchmarkParse1000Routes is the decode and validation of the same file.
func BenchmarkParse1000Routes(b *testing.B) {
	cfg := thousandRoutes(b)
	_ = cfg
	var sb strings.Builder
	sb.WriteString("routes:\n")
	for i := range 1000 {
		fmt.Fprintf(&sb, "  - name: svc-%d\n    match: {host: svc-%d.example.com}\n    stable: blue\n    versions:\n      blue: {backends: [\"127.0.0.1:%d\"]}\n      canary: {backends: [\"127.0.0.1:%d\"]}\n    weights: {blue: 90, canary: 10}\n", i, i, 10000+i, 20000+i)
	}
	data := []byte(sb.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := config.Parse("bench.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}
