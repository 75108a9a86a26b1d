package router_test

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

// compile parses yaml as a config file and compiles it with the file's
// weights and a fresh registry.
func compile(tb testing.TB, yaml string) *router.Table {
	tb.Helper()
	return compileEff(tb, yaml, nil)
}

// compileEff is compile with live weights, stable and drains from eff.
func compileEff(tb testing.TB, yaml string, eff map[string]router.Effective) *router.Table {
	tb.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		tb.Fatalf("config.Parse: %v\n%s", err, yaml)
	}
	t, err := router.Compile(cfg, eff, router.NewRegistry(metrics.New()))
	if err != nil {
		tb.Fatalf("router.Compile: %v", err)
	}
	return t
}

// request parses raw (a request head in wire format, "\n" line ends) the
// way the server would, so headers with empty values and repeated headers
// are what a client really sends.
func request(tb testing.TB, raw string) *fasthttp.Request {
	tb.Helper()
	raw = strings.ReplaceAll(raw, "\n", "\r\n") + "\r\n"
	req := &fasthttp.Request{}
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		tb.Fatalf("cannot parse request %q: %v", raw, err)
	}
	return req
}

// get is a GET of path on host with extra header lines ("Name: value").
func get(tb testing.TB, path string, headers ...string) *fasthttp.Request {
	tb.Helper()
	raw := "GET " + path + " HTTP/1.1\nHost: shop.example.com\n"
	for _, h := range headers {
		raw += h + "\n"
	}
	return request(tb, raw)
}

// route returns the only route of a one-route table.
func route(tb testing.TB, yaml string) *router.Route {
	tb.Helper()
	t := compile(tb, yaml)
	if len(t.Routes) != 1 {
		tb.Fatalf("want one route, got %d", len(t.Routes))
	}
	return t.Routes[0]
}

// threeVersions is a route with blue (stable), green and canary (the
// candidate) at the given weights, sticky on X-User-ID unless extra (more
// lines of the route) has its own sticky.
func threeVersions(blue, green, canary float64, extra string) string {
	sticky := "    sticky: {header: X-User-ID}\n"
	if strings.Contains(extra, "sticky:") {
		sticky = ""
	}
	return fmt.Sprintf(`
routes:
  - name: shop
    stable: blue
    candidate: canary
    versions:
      blue:   {backends: ["127.0.0.1:9001", "127.0.0.1:9002"]}
      green:  {backends: ["127.0.0.1:9011"]}
      canary: {backends: ["127.0.0.1:9021"]}
    weights: {blue: %v, green: %v, canary: %v}
%s%s`, blue, green, canary, sticky, extra)
}

const matchConfig = `
routes:
  - name: shop
    match: {host: shop.example.com}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9001"]}}
  - name: shop-api
    match: {host: shop.example.com, path_prefix: /api}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9002"]}}
  - name: wild
    match: {host: "*.example.com"}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9003"]}}
  - name: wild-admin
    match: {host: "*.example.com", path_prefix: /admin}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9004"]}}
  - name: eu
    match: {host: "*.eu.example.com", path_prefix: /}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9005"]}}
  - name: static
    match: {path_prefix: /static}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9006"]}}
  - name: api-v2
    match: {path_prefix: /api/v2}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9007"]}}
  - name: other
    match: {host: other.test, path_prefix: /only}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9008"]}}
`

func TestMatch(t *testing.T) {
	tbl := compile(t, matchConfig)
	noCatchAll := compile(t, `
routes:
  - name: shop
    match: {host: shop.example.com, path_prefix: /app}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9001"]}}
  - name: wild
    match: {host: "*.example.com", path_prefix: /app}
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9003"]}}
`)
	catchAll := compile(t, matchConfig+`
  - name: rest
    stable: v1
    versions: {v1: {backends: ["127.0.0.1:9009"]}}
`)
	tests := []struct {
		name       string
		tbl        *router.Table
		host, path string
		want       string // route name, "" for no match
	}{
		{"exact host", tbl, "shop.example.com", "/cart", "shop"},
		{"exact host with port", tbl, "shop.example.com:8080", "/cart", "shop"},
		{"upper case host", tbl, "SHOP.Example.COM", "/cart", "shop"},
		{"upper case host with port", tbl, "Shop.Example.Com:443", "/", "shop"},
		{"absolute FQDN", tbl, "shop.example.com.", "/", "shop"},
		{"longer prefix on the same host", tbl, "shop.example.com", "/api/users", "shop-api"},
		{"prefix is bytes, not segments", tbl, "shop.example.com", "/apiary", "shop-api"},
		{"host-less longer prefix beats exact host", tbl, "shop.example.com", "/api/v2/users", "api-v2"},
		{"host-less longer prefix beats wildcard", tbl, "www.example.com", "/static/app.js", "static"},
		{"wildcard", tbl, "www.example.com", "/", "wild"},
		{"wildcard with port and case", tbl, "WWW.example.com:80", "/", "wild"},
		{"wildcard covers deeper subdomains", tbl, "a.b.c.example.com", "/x", "wild"},
		{"wildcard longer prefix", tbl, "www.example.com", "/admin/users", "wild-admin"},
		{"exact host falls back to wildcard's longer prefix", tbl, "shop.example.com", "/admin", "wild-admin"},
		{"more specific wildcard", tbl, "paris.eu.example.com", "/", "eu"},
		{"more specific wildcard, deeper", tbl, "x.paris.eu.example.com", "/", "eu"},
		{"longer prefix of a less specific wildcard wins", tbl, "paris.eu.example.com", "/admin", "wild-admin"},
		{"wildcard does not cover the bare domain", tbl, "example.com", "/", ""},
		{"wildcard suffix must be a label boundary", tbl, "wwwexample.com", "/", ""},
		{"host-less prefix on an unknown host", tbl, "unknown.test", "/static/x", "static"},
		{"host-less prefix without host", tbl, "", "/api/v2", "api-v2"},
		{"no match", tbl, "unknown.test", "/", ""},
		{"known host, no prefix matches", tbl, "other.test", "/elsewhere", ""},
		{"known host, prefix matches", tbl, "other.test", "/only/this", "other"},
		{"catch-all takes unknown hosts", catchAll, "unknown.test", "/", "rest"},
		{"catch-all takes unmatched paths of known hosts", catchAll, "other.test", "/elsewhere", "rest"},
		{"catch-all loses to exact host", catchAll, "shop.example.com", "/", "shop"},
		{"catch-all loses to wildcard", catchAll, "www.example.com", "/", "wild"},
		{"catch-all takes the bare domain", catchAll, "example.com", "/", "rest"},
		{"only prefixed routes: exact", noCatchAll, "shop.example.com", "/app/x", "shop"},
		{"only prefixed routes: wildcard", noCatchAll, "x.example.com", "/app/x", "wild"},
		{"only prefixed routes: no prefix", noCatchAll, "shop.example.com", "/", ""},
		{"only prefixed routes: no host", noCatchAll, "nowhere.test", "/app", ""},
		{"IPv6 literal with port", catchAll, "[::1]:8080", "/", "rest"},
		{"very long host", catchAll, strings.Repeat("a", 300) + ".example.com", "/", "wild"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.tbl.Match([]byte(tt.host), []byte(tt.path))
			got := ""
			if r != nil {
				got = r.Name
			}
			if got != tt.want {
				t.Errorf("Match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestWeightedRingIsExact(t *testing.T) {
	tests := []struct {
		name    string
		weights map[string]float64 // blue, green, canary
	}{
		{"90/0/10", map[string]float64{"blue": 90, "green": 0, "canary": 10}},
		{"50/25/25", map[string]float64{"blue": 50, "green": 25, "canary": 25}},
		{"100/0/0", map[string]float64{"blue": 100, "green": 0, "canary": 0}},
		{"0/0/100", map[string]float64{"blue": 0, "green": 0, "canary": 100}},
		{"hundredths", map[string]float64{"blue": 99.49, "green": 0.5, "canary": 0.01}},
		{"thirds", map[string]float64{"blue": 33.34, "green": 33.33, "canary": 33.33}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := route(t, threeVersions(tt.weights["blue"], tt.weights["green"], tt.weights["canary"], ""))
			// The ring is Slots/gcd(weights) long; any multiple of its
			// length gives exact counts, so 10,000 picks (and 2 × 10,000,
			// starting mid-ring) must split exactly.
			for round, picks := range []int{router.Slots, 2 * router.Slots} {
				got := map[string]int{}
				for range picks {
					got[r.Weighted().Name]++
				}
				for name, w := range tt.weights {
					want := int(math.Round(w*100)) * picks / router.Slots
					if got[name] != want {
						t.Errorf("round %d: %s got %d of %d picks, want %d (weight %v)", round, name, got[name], picks, want, w)
					}
				}
			}
		})
	}
}

func TestWeightedInterleaves(t *testing.T) {
	// nginx's smooth weighted round robin: at 75/25 no window of 4
	// consecutive picks holds more than one canary.
	r := route(t, threeVersions(75, 0, 25, ""))
	var last []string
	for i := range 400 {
		last = append(last, r.Weighted().Name)
		if len(last) > 4 {
			last = last[1:]
		}
		n := 0
		for _, v := range last {
			if v == "canary" {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("pick %d: window %v holds %d canaries, want at most 1", i, last, n)
		}
	}
}

// randomKeys returns n distinct-ish random user IDs from a fixed seed.
func randomKeys(n int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "user-%016x", rng.Uint64())
	}
	return keys
}

// within4Sigma reports whether got hits out of n are within four standard
// deviations of a binomial with probability p (for p of 0 or 1: exact).
func within4Sigma(got, n int, p float64) (ok bool, lo, hi float64) {
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	lo, hi = mean-4*sd, mean+4*sd
	return float64(got) >= lo && float64(got) <= hi, lo, hi
}

func TestStickySplit(t *testing.T) {
	const n = 100_000
	keys := randomKeys(n, 1)
	tests := []struct{ blue, green, canary float64 }{
		{90, 0, 10},
		{50, 25, 25},
		{99, 0.5, 0.5},
		{0, 0, 100},
		{33.34, 33.33, 33.33},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/%v/%v", tt.blue, tt.green, tt.canary), func(t *testing.T) {
			r := route(t, threeVersions(tt.blue, tt.green, tt.canary, ""))
			got := map[string]int{}
			for _, k := range keys {
				got[r.Sticky(k).Name]++
			}
			for name, w := range map[string]float64{"blue": tt.blue, "green": tt.green, "canary": tt.canary} {
				if ok, lo, hi := within4Sigma(got[name], n, w/100); !ok {
					t.Errorf("%s got %d of %d keys, want %.0f..%.0f (weight %v)", name, got[name], n, lo, hi, w)
				}
			}
		})
	}
}

func TestStickyBucketsAreUniform(t *testing.T) {
	// Sequential IDs, as real user IDs often are, must spread as well as
	// random ones: count them in 10 ranges of 1,000 buckets.
	r := route(t, threeVersions(90, 0, 10, ""))
	const n = 100_000
	var ranges [10]int
	for i := range n {
		ranges[r.Bucket(fmt.Appendf(nil, "%d", i))/1000]++
	}
	for i, got := range ranges {
		if ok, lo, hi := within4Sigma(got, n, 0.1); !ok {
			t.Errorf("buckets %d..%d got %d of %d sequential keys, want %.0f..%.0f", i*1000, i*1000+999, got, n, lo, hi)
		}
	}
}

func TestStickyConsistency(t *testing.T) {
	yaml := threeVersions(70, 10, 20, "")
	a := route(t, yaml)
	b := route(t, yaml) // recompiled, with a fresh registry
	other := compile(t, strings.Replace(yaml, "name: shop", "name: shop2", 1)).Routes[0]
	moved := 0
	for _, k := range randomKeys(10_000, 2) {
		first := a.Sticky(k)
		for range 3 {
			if got := a.Sticky(k); got != first {
				t.Fatalf("key %s: Sticky gave %s, then %s", k, first.Name, got.Name)
			}
		}
		if got := b.Sticky(k); got.Name != first.Name {
			t.Fatalf("key %s: %s before recompiling, %s after", k, first.Name, got.Name)
		}
		if a.Bucket(k) != other.Bucket(k) {
			moved++
		}
	}
	// The route name is hashed in: the same key lands in unrelated buckets
	// on another route (all but ~1 in 10,000 differ).
	if moved < 9_900 {
		t.Errorf("only %d of 10,000 keys have another bucket on a route of another name", moved)
	}
}

func TestStickyMonotone(t *testing.T) {
	keys := randomKeys(20_000, 3)
	tests := []struct {
		name  string
		steps [][3]float64 // blue, green, canary
	}{
		{"two versions", [][3]float64{{90, 0, 10}, {80, 0, 20}, {50, 0, 50}, {0, 0, 100}}},
		{"a third version keeps its weight", [][3]float64{{80, 10, 10}, {70, 10, 20}, {40, 10, 50}, {0, 10, 90}}},
		{"hundredths", [][3]float64{{99.99, 0, 0.01}, {99.5, 0, 0.5}, {98.75, 0, 1.25}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev := route(t, threeVersions(tt.steps[0][0], tt.steps[0][1], tt.steps[0][2], ""))
			for _, s := range tt.steps[1:] {
				next := route(t, threeVersions(s[0], s[1], s[2], ""))
				onto := 0
				for _, k := range keys {
					was, is := prev.Sticky(k).Name, next.Sticky(k).Name
					if was == "canary" && is != "canary" {
						t.Fatalf("%v: key %s moved off the candidate onto %s", s, k, is)
					}
					if was != is && is != "canary" {
						t.Fatalf("%v: key %s moved from %s to %s, not onto the candidate", s, k, was, is)
					}
					if was != is {
						onto++
					}
				}
				if onto == 0 {
					t.Errorf("%v: raising the candidate moved no key onto it", s)
				}
				prev = next
			}
		})
	}
}

func TestStickyCandidateKeepsUsersWhileOthersChange(t *testing.T) {
	// Rolling green back (its share to stable) must not move canary users.
	before := route(t, threeVersions(60, 20, 20, ""))
	after := route(t, threeVersions(80, 0, 20, ""))
	for _, k := range randomKeys(20_000, 4) {
		was, is := before.Sticky(k).Name, after.Sticky(k).Name
		if was == "canary" && is != "canary" {
			t.Fatalf("key %s moved off the candidate onto %s when green went to 0", k, is)
		}
		if was == "blue" && is != "blue" {
			t.Fatalf("key %s moved off stable onto %s when green went to 0", k, is)
		}
	}
}

func TestPickVersion(t *testing.T) {
	const rules = `    rules:
      - {header: X-Beta, equals: "true", version: canary}
      - {header: X-Team, prefix: "qa-", version: green}
      - {header: X-Agent, regex: "^bot-[0-9]+$", version: green}
      - {header: X-Dark, version: canary}
      - {cookie: beta, equals: "1", version: green}
      - {query: preview, version: canary}
      - {query: flavour, equals: "green", version: green}
`
	withRules := route(t, threeVersions(100, 0, 0, rules))
	weightsOnly := route(t, threeVersions(0, 0, 100, ""))
	customOverride := route(t, threeVersions(100, 0, 0, "    override_header: X-Force\n"))
	noOverride := route(t, threeVersions(100, 0, 0, "    override_header: \"\"\n"))
	// A key whose sticky bucket is on blue at 50/0/50, to tell the sticky
	// header from the weights.
	half := route(t, threeVersions(50, 0, 50, rules))
	var blueKey string
	for _, k := range randomKeys(100, 5) {
		if half.Sticky(k).Name == "blue" {
			blueKey = string(k)
			break
		}
	}
	tests := []struct {
		name    string
		r       *router.Route
		req     *fasthttp.Request
		want    string
		wantHow router.How
	}{
		{"weights", weightsOnly, get(t, "/"), "canary", router.ByWeight},
		{"override names a version", withRules, get(t, "/", "X-Veer-Version: green"), "green", router.ByOverride},
		{"override is case-insensitive in its name", withRules, get(t, "/", "x-veer-version: canary"), "canary", router.ByOverride},
		{"override unknown value ignored", withRules, get(t, "/", "X-Veer-Version: purple"), "blue", router.ByWeight},
		{"override empty value ignored", withRules, get(t, "/", "X-Veer-Version:"), "blue", router.ByWeight},
		{"override beats a rule", withRules, get(t, "/", "X-Veer-Version: blue", "X-Beta: true"), "blue", router.ByOverride},
		{"custom override header", customOverride, get(t, "/", "X-Force: canary"), "canary", router.ByOverride},
		{"default override header unused when renamed", customOverride, get(t, "/", "X-Veer-Version: canary"), "blue", router.ByWeight},
		{"override disabled", noOverride, get(t, "/", "X-Veer-Version: canary"), "blue", router.ByWeight},
		{"header equals", withRules, get(t, "/", "X-Beta: true"), "canary", router.ByRule},
		{"header equals is exact", withRules, get(t, "/", "X-Beta: TRUE"), "blue", router.ByWeight},
		{"header prefix", withRules, get(t, "/", "X-Team: qa-berlin"), "green", router.ByRule},
		{"header prefix no match", withRules, get(t, "/", "X-Team: dev-qa-"), "blue", router.ByWeight},
		{"header regex", withRules, get(t, "/", "X-Agent: bot-42"), "green", router.ByRule},
		{"header regex no match", withRules, get(t, "/", "X-Agent: bot-42x"), "blue", router.ByWeight},
		{"header presence", withRules, get(t, "/", "X-Dark: anything"), "canary", router.ByRule},
		{"header presence with empty value", withRules, get(t, "/", "X-Dark:"), "canary", router.ByRule},
		{"cookie equals", withRules, get(t, "/", "Cookie: a=b; beta=1"), "green", router.ByRule},
		{"cookie other value", withRules, get(t, "/", "Cookie: beta=0"), "blue", router.ByWeight},
		{"query presence", withRules, get(t, "/?preview"), "canary", router.ByRule},
		{"query presence with value", withRules, get(t, "/p?x=1&preview=0"), "canary", router.ByRule},
		{"query equals", withRules, get(t, "/?flavour=green"), "green", router.ByRule},
		{"query equals no match", withRules, get(t, "/?flavour=blue"), "blue", router.ByWeight},
		{"first matching rule wins", withRules, get(t, "/?flavour=green", "X-Team: qa-1", "X-Beta: true"), "canary", router.ByRule},
		{"first matching rule wins, in file order", withRules, get(t, "/?preview", "X-Team: qa-1"), "green", router.ByRule},
		{"rule beats sticky header", half, get(t, "/", "X-User-ID: "+blueKey, "X-Beta: true"), "canary", router.ByRule},
		{"sticky header", half, get(t, "/", "X-User-ID: "+blueKey), "blue", router.ByHeader},
		{"empty sticky header uses weights", weightsOnly, get(t, "/", "X-User-ID:"), "canary", router.ByWeight},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, how := tt.r.PickVersion(tt.req, time.Now().UnixNano())
			if v.Name != tt.want || how != tt.wantHow {
				t.Errorf("PickVersion = %s by %v, want %s by %v", v.Name, how, tt.want, tt.wantHow)
			}
		})
	}
}

func TestPickVersionStickyCookie(t *testing.T) {
	yaml := threeVersions(100, 0, 0, "    sticky: {cookie: veer, drain: 10m}\n")
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		eff     router.Effective
		cookie  string
		now     time.Time
		want    string
		wantHow router.How
	}{
		{"version with weight", router.Effective{Weights: w(50, 0, 50), Stable: "blue"}, "canary", now, "canary", router.ByCookie},
		{"stable without weight", router.Effective{Weights: w(0, 0, 100), Stable: "blue"}, "blue", now, "canary", router.ByWeight},
		{"version without weight", router.Effective{Weights: w(100, 0, 0), Stable: "blue"}, "canary", now, "blue", router.ByWeight},
		{"unknown version", router.Effective{Weights: w(0, 0, 100), Stable: "blue"}, "purple", now, "canary", router.ByWeight},
		{"draining, within the deadline", router.Effective{Weights: w(100, 0, 0), Stable: "blue",
			Drain: map[string]time.Time{"green": now.Add(time.Minute)}}, "green", now, "green", router.ByCookie},
		{"draining, at the deadline", router.Effective{Weights: w(100, 0, 0), Stable: "blue",
			Drain: map[string]time.Time{"green": now}}, "green", now, "blue", router.ByWeight},
		{"draining, after the deadline", router.Effective{Weights: w(100, 0, 0), Stable: "blue",
			Drain: map[string]time.Time{"green": now.Add(-time.Second)}}, "green", now, "blue", router.ByWeight},
		{"another version's drain", router.Effective{Weights: w(100, 0, 0), Stable: "blue",
			Drain: map[string]time.Time{"green": now.Add(time.Minute)}}, "canary", now, "blue", router.ByWeight},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := compileEff(t, yaml, map[string]router.Effective{"shop": tt.eff}).Routes[0]
			req := get(t, "/", "Cookie: other=1; veer="+tt.cookie)
			v, how := r.PickVersion(req, tt.now.UnixNano())
			if v.Name != tt.want || how != tt.wantHow {
				t.Errorf("PickVersion = %s by %v, want %s by %v", v.Name, how, tt.want, tt.wantHow)
			}
		})
	}
}

// w is the weights map of blue, green and canary in percent.
func w(blue, green, canary float64) map[string]config.Percent {
	p := func(f float64) config.Percent { return config.Percent(math.Round(f * 100)) }
	return map[string]config.Percent{"blue": p(blue), "green": p(green), "canary": p(canary)}
}

func TestPickVersionRuleBeatsCookieAndWeights(t *testing.T) {
	r := route(t, threeVersions(100, 0, 0, `    rules: [{header: X-Beta, version: canary}]
    sticky: {header: X-User-ID, cookie: veer}
`))
	v, how := r.PickVersion(get(t, "/", "Cookie: veer=blue", "X-User-ID: u1", "X-Beta: 1"), 0)
	if v.Name != "canary" || how != router.ByRule {
		t.Errorf("PickVersion = %s by %v, want canary by rule", v.Name, how)
	}
	v, how = r.PickVersion(get(t, "/", "Cookie: veer=blue", "X-User-ID: u1"), 0)
	if v.Name != "blue" || how != router.ByCookie {
		t.Errorf("PickVersion = %s by %v, want blue by cookie (the cookie beats the sticky header)", v.Name, how)
	}
}

func TestPickBackend(t *testing.T) {
	r := route(t, threeVersions(100, 0, 0, ""))
	blue := r.Version("blue")
	now := time.Now().UnixNano()
	got := map[string]int{}
	for range 100 {
		got[blue.PickBackend(now).Addr]++
	}
	if got["127.0.0.1:9001"] != 50 || got["127.0.0.1:9002"] != 50 {
		t.Errorf("round robin over two backends gave %v, want 50 each", got)
	}

	blue.Backends[0].State.Eject(now, time.Minute)
	for range 10 {
		if b := blue.PickBackend(now); b == nil || b.Addr != "127.0.0.1:9002" {
			t.Fatalf("with 9001 ejected PickBackend = %v, want 127.0.0.1:9002", b)
		}
	}
	if b := blue.PickOther(now, blue.Backends[1]); b != nil {
		t.Errorf("PickOther skipping the only available backend = %s, want nil", b.Addr)
	}
	if b := blue.PickBackend(now + int64(2*time.Minute)); b == nil {
		t.Errorf("after the ejection PickBackend = nil, want a backend")
	}
	blue.Backends[1].State.SetUp(false)
	if b := blue.PickBackend(now); b != nil {
		t.Errorf("with one backend ejected and one down PickBackend = %s, want nil", b.Addr)
	}
	green := r.Version("green")
	green.Backends[0].State.SetUp(false)
	if b := green.PickBackend(now); b != nil {
		t.Errorf("single backend down: PickBackend = %s, want nil", b.Addr)
	}
}

func TestCompileErrors(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte(threeVersions(90, 0, 10, "")))
	if err != nil {
		t.Fatal(err)
	}
	reg := router.NewRegistry(metrics.New())
	tests := []struct {
		name string
		eff  router.Effective
	}{
		{"unknown stable", router.Effective{Weights: w(90, 0, 10), Stable: "purple"}},
		{"weights not 100", router.Effective{Weights: w(90, 0, 5), Stable: "blue"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := router.Compile(cfg, map[string]router.Effective{"shop": tt.eff}, reg); err == nil {
				t.Errorf("Compile succeeded, want an error")
			}
		})
	}
}
