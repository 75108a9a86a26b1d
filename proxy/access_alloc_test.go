//go:build !race

package proxy

import (
	"io"
	"log/slog"
	"testing"

	"github.com/veer-proxy/veer/accesslog"
)

// TestAccessLogZeroAllocs: with access logging on, a proxied request
// still allocates nothing (the line is formatted into a reused buffer).
func TestAccessLogZeroAllocs(t *testing.T) {
	for _, format := range []string{accesslog.JSON, accesslog.Combined} {
		t.Run(format, func(t *testing.T) {
			mv := newMemVeer(t, benchConfig)
			l, err := accesslog.New(accesslog.Options{Writer: io.Discard, Format: format, Buffer: 16,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			mv.p.AccessLog = l
			ctx, tmpl := handlerCtx(t, "X-User-ID: user-1234")
			run := func() {
				tmpl.CopyTo(&ctx.Request)
				mv.p.Handler(ctx)
			}
			for i := 0; i < 1000; i++ {
				run()
			}
			if code := ctx.Response.StatusCode(); code != 200 {
				t.Fatalf("status %d", code)
			}
			if got := testing.AllocsPerRun(200, run); got != 0 {
				t.Errorf("a proxied, logged request allocates %v times, want 0", got)
			}
		})
	}
}
