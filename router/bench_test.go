package router_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// manyRoutes is a config of n routes on hosts svc-N.example.com, each with
// a /api route, plus a wildcard and a catch-all.
func manyRoutes(n int) string {
	var b strings.Builder
	b.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&b, `  - name: svc-%d
    match: {host: svc-%d.example.com, path_prefix: /%s}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:%d"]}}
`, i, i/2, map[bool]string{true: "api", false: ""}[i%2 == 1], 10000+i)
	}
	b.WriteString(`  - name: wild
    match: {host: "*.example.com"}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9998"]}}
  - name: rest
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9999"]}}
`)
	return b.String()
}

func BenchmarkMatch(b *testing.B) {
	tests := []struct {
		name, yaml, host, path string
	}{
		{"exact", matchConfig, "shop.example.com", "/api/users"},
		{"wildcard", matchConfig, "a.b.example.com", "/admin/x"},
		{"host-less", matchConfig, "unknown.test", "/static/app.js"},
		{"1000 routes exact", manyRoutes(1000), "svc-321.example.com", "/api/users"},
		{"1000 routes wildcard", manyRoutes(1000), "www.example.com", "/"},
		{"1000 routes catch-all", manyRoutes(1000), "unknown.test", "/"},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			tbl := compile(b, tt.yaml)
			host, path := []byte(tt.host), []byte(tt.path)
			if tbl.Match(host, path) == nil {
				b.Fatalf("no route for %s%s", tt.host, tt.path)
			}
			b.ReportAllocs()
			for b.Loop() {
				tbl.Match(host, path)
			}
		})
	}
}

func BenchmarkPickVersion(b *testing.B) {
	r := route(b, threeVersions(90, 0, 10, ""))
	now := time.Now().UnixNano()
	b.Run("weighted", func(b *testing.B) {
		req := get(b, "/")
		b.ReportAllocs()
		for b.Loop() {
			r.PickVersion(req, now)
		}
	})
	b.Run("sticky", func(b *testing.B) {
		req := get(b, "/", "X-User-ID: 3f2a9c1e-user-1234")
		b.ReportAllocs()
		for b.Loop() {
			r.PickVersion(req, now)
		}
	})
	b.Run("weighted parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Weighted()
			}
		})
	})
}
