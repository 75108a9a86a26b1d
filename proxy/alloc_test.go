//go:build !race

package proxy

import "testing"

// TestHandlerZeroAllocs holds a proxied request to no allocation in veer
// (and, as it happens, in fasthttp's client and the in-memory backend too,
// which run in the same process and are counted), on every path a
// successful request takes. The race detector allocates, hence the tag.
func TestHandlerZeroAllocs(t *testing.T) {
	const cookieConfig = benchRoute + "    sticky: {header: X-User-ID, cookie: veer}\n"
	tests := []struct {
		name, config, header string
	}{
		{"weighted", benchConfig, ""},
		{"sticky header", benchConfig, "X-User-ID: user-1234"},
		{"override", benchConfig, "X-Veer-Version: canary"},
		{"request id kept", benchConfig, "X-Request-Id: 0123456789abcdef"},
		{"forwarded-for replaced", benchConfig, "X-Forwarded-For: 203.0.113.9"},
		{"forwarded-for appended", "trusted_proxies: [192.0.2.0/24]\n" + benchConfig, "X-Forwarded-For: 203.0.113.9"},
		{"connection names a header", benchConfig, "Connection: keep-alive, X-User-ID"},
		{"sticky cookie set", cookieConfig, ""},
		{"sticky cookie honoured", cookieConfig, "Cookie: veer=canary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mv := newMemVeer(t, tt.config)
			ctx, tmpl := handlerCtx(t, tt.header)
			run := func() {
				tmpl.CopyTo(&ctx.Request)
				mv.p.Handler(ctx)
			}
			run()
			if code := ctx.Response.StatusCode(); code != 200 {
				t.Fatalf("status %d", code)
			}
			if got := testing.AllocsPerRun(200, run); got != 0 {
				t.Errorf("a proxied request allocates %v times, want 0", got)
			}
		})
	}
}
