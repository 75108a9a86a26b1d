//go:build !race

package router_test

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/router"
)

// TestZeroAllocs holds the hot path to no allocation (like fasthttp's
// allocation_test.go): matching a route, every way of picking a version,
// and picking a backend. The race detector allocates, hence the build tag.
func TestZeroAllocs(t *testing.T) {
	tbl := compile(t, matchConfig)
	r := route(t, threeVersions(90, 0, 10, `    rules:
      - {header: X-Beta, equals: "true", version: canary}
      - {query: preview, version: green}
      - {header: X-Agent, regex: "^bot-[0-9]+$", version: green}
`))
	cookieRoute := route(t, threeVersions(50, 0, 50, "    sticky: {header: X-User-ID, cookie: veer}\n"))
	now := time.Now().UnixNano()
	override := get(t, "/", "X-Veer-Version: canary")
	rule := get(t, "/", "X-Beta: true")
	queryRule := get(t, "/p?a=1&preview")
	regexRule := get(t, "/", "X-Agent: bot-42")
	sticky := get(t, "/", "X-User-ID: user-42")
	weighted := get(t, "/")
	cookie := get(t, "/", "Cookie: a=b; veer=canary")
	host, wildHost, path := []byte("Shop.Example.com:8080"), []byte("a.b.example.com"), []byte("/api/v2/users")
	blue := r.Version("blue")
	// Each pick must take the path it is named after, or the test would
	// measure another one.
	for _, c := range []struct {
		r    *router.Route
		req  *fasthttp.Request
		want router.How
	}{
		{r, override, router.ByOverride}, {r, rule, router.ByRule}, {r, queryRule, router.ByRule}, {r, regexRule, router.ByRule}, {r, sticky, router.ByHeader},
		{r, weighted, router.ByWeight}, {cookieRoute, cookie, router.ByCookie},
	} {
		if _, how := c.r.PickVersion(c.req, now); how != c.want {
			t.Fatalf("PickVersion took the %v path, want %v", how, c.want)
		}
	}
	tests := []struct {
		name string
		f    func()
	}{
		{"Match exact host", func() { tbl.Match(host, path) }},
		{"Match wildcard", func() { tbl.Match(wildHost, path) }},
		{"PickVersion override", func() { r.PickVersion(override, now) }},
		{"PickVersion rule", func() { r.PickVersion(rule, now) }},
		{"PickVersion query rule", func() { r.PickVersion(queryRule, now) }},
		{"PickVersion regex rule", func() { r.PickVersion(regexRule, now) }},
		{"PickVersion sticky header", func() { r.PickVersion(sticky, now) }},
		{"PickVersion weighted", func() { r.PickVersion(weighted, now) }},
		{"PickVersion cookie", func() { cookieRoute.PickVersion(cookie, now) }},
		{"PickBackend", func() { blue.PickBackend(now) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, tt.f); got != 0 {
				t.Errorf("%s allocates %v times per call, want 0", tt.name, got)
			}
		})
	}
}
