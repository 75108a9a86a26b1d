package tlsterm

import (
	"testing"

	"github.com/valyala/fasthttp"
)

func TestRedirectHandler(t *testing.T) {
	tests := []struct {
		name, port, host, uri string
		wantStatus            int
		wantLocation          string
	}{
		{"path and query kept", "8443", "shop.example.com", "/cart?id=7&x=%2F", 308, "https://shop.example.com:8443/cart?id=7&x=%2F"},
		{"the client's port is dropped", "8443", "shop.example.com:8080", "/", 308, "https://shop.example.com:8443/"},
		{"443 is left out", "443", "shop.example.com:80", "/a", 308, "https://shop.example.com/a"},
		{"IPv6 literal", "8443", "[::1]:8080", "/a", 308, "https://[::1]:8443/a"},
		{"absolute-form target", "8443", "ignored.example", "http://shop.example.com/b?c", 308, "https://shop.example.com:8443/b?c"},
		{"no host", "8443", "", "/", 400, ""},
		{"host that would point elsewhere", "8443", "evil.example/x", "/", 400, ""},
		{"userinfo trick", "8443", "shop.example.com@evil.example", "/", 400, ""},
	}
	h := func(port string) fasthttp.RequestHandler { return RedirectHandler(port) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.Header.SetRequestURI(tt.uri)
			ctx.Request.Header.SetHost(tt.host)
			h(tt.port)(&ctx)
			if got := ctx.Response.StatusCode(); got != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", got, tt.wantStatus)
			}
			if got := string(ctx.Response.Header.Peek("Location")); got != tt.wantLocation {
				t.Errorf("Location: got %q, want %q", got, tt.wantLocation)
			}
		})
	}
}
