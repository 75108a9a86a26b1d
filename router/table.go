// Package router compiles a config into an immutable routing Table and
// picks, for each request, the route, the version and the backend.
//
// A Table is built completely and then published behind an
// atomic.Pointer (as Fabio does); it is never mutated after that, so any
// number of goroutines may read it. Weighted choice is precomputed at
// compile time (a slot ring per route), so a pick is an index and an
// atomic add, with no lock and no allocation.
package router

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/health"
	"github.com/veer-proxy/veer/metrics"
)

// Sentinel errors.
var (
	ErrNoRoute   = errors.New("router: no route for this host and path")
	ErrNoBackend = errors.New("router: no healthy backend")
)

// Slots is the resolution of weights: 100% = 10,000 slots, so 0.01% each.
const Slots = config.PercentScale

// Effective is the live part of a route that operators and the rollback
// change without editing the file: its weights and stable version, and the
// drain deadlines of versions a switch or promote took to 0.
type Effective struct {
	Weights map[string]config.Percent
	Stable  string
	Drain   map[string]time.Time
}

// Table is an immutable compiled config. Safe for concurrent use.
type Table struct {
	Config  *config.Config
	Routes  []*Route // in config order
	byName  map[string]*Route
	exact   map[string][]*Route // lower-case host → candidates, longest prefix first
	wild    map[string][]*Route // ".example.com" → candidates
	any     []*Route            // routes without a host
	Trusted []netip.Prefix
}

// Route is one compiled route. Its fields are read-only after Compile.
type Route struct {
	Name      string
	Index     int
	Config    *config.Route
	Versions  []*Version // in file order
	Stable    *Version
	Candidate *Version // nil when none

	host     string // "" = any host; "*.x" for wildcards
	prefix   []byte
	override []byte // override header name, nil when disabled
	stickyH  []byte
	stickyC  []byte
	drainNS  []int64 // per version: cookie sessions keep going until (unix ns)
	rules    []rule
	hashSeed uint64

	ring    []uint8 // weighted choice: version index per slot, smoothly interleaved
	ringPos atomic.Uint64

	stickyOrder []uint8  // versions laid over the 10,000 sticky buckets, in this order
	stickyEnd   []uint16 // exclusive end bucket of each entry of stickyOrder

	// Mirror is the version that gets a copy of MirrorShare of the
	// requests (nil when the route mirrors nothing).
	Mirror        *Version
	MirrorMetrics *metrics.Mirror
	mirrorShare   uint64 // in 0.01%
	mirrorPos     atomic.Uint64
}

// Version is one version of a compiled route.
type Version struct {
	Name     string
	Index    int
	Weight   config.Percent
	Backends []*Backend
	Window   *health.Window
	Metrics  *metrics.Version
	Route    *Route
	nameB    []byte
	rr       atomic.Uint32
}

// Backend is one upstream address of a version.
type Backend struct {
	Addr    string
	Client  *fasthttp.HostClient
	State   *health.BackendState
	Version *Version
}

type ruleKind uint8

const (
	ruleHeader ruleKind = iota
	ruleCookie
	ruleQuery
)

type rule struct {
	kind    ruleKind
	name    []byte
	equals  []byte
	hasEq   bool
	prefix  []byte
	re      *regexp.Regexp
	version *Version
}

// Compile builds a Table from cfg, with each route's live weights and
// stable version taken from eff (routes missing from eff use the file's),
// and the state that outlives tables taken from reg.
func Compile(cfg *config.Config, eff map[string]Effective, reg *Registry) (*Table, error) {
	t := &Table{
		Config: cfg,
		byName: make(map[string]*Route, len(cfg.Routes)),
		exact:  map[string][]*Route{},
		wild:   map[string][]*Route{},
	}
	for _, p := range cfg.TrustedProxies {
		pfx, err := config.ParsePrefix(p)
		if err != nil {
			return nil, err
		}
		t.Trusted = append(t.Trusted, pfx)
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		e, ok := eff[rc.Name]
		if !ok {
			e = Effective{Weights: rc.Weights, Stable: rc.Stable}
		}
		r, err := compileRoute(i, rc, e, reg, cfg.ResolvePath)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", rc.Name, err)
		}
		t.Routes = append(t.Routes, r)
		t.byName[r.Name] = r
	}
	t.buildMatch()
	return t, nil
}

// compileRoute compiles one route; resolve makes a path of the config (a
// version's tls.ca_file) relative to the config file's directory.
func compileRoute(idx int, rc *config.Route, e Effective, reg *Registry, resolve func(string) string) (*Route, error) {
	r := &Route{
		Name:     rc.Name,
		Index:    idx,
		Config:   rc,
		host:     strings.ToLower(rc.Match.Host),
		prefix:   []byte(rc.Match.PathPrefix),
		hashSeed: fnvString(fnvOffset, rc.Name+"\x00"),
	}
	if rc.OverrideHeader != nil && *rc.OverrideHeader != "" {
		r.override = []byte(*rc.OverrideHeader)
	}
	if rc.Sticky.Header != "" {
		r.stickyH = []byte(rc.Sticky.Header)
	}
	if rc.Sticky.Cookie != "" {
		r.stickyC = []byte(rc.Sticky.Cookie)
	}
	var total int
	for i, name := range rc.VersionOrder {
		vc := rc.Versions[name] // a copy: the config is never mutated
		vc.TLS.CAFile = resolve(vc.TLS.CAFile)
		v := &Version{Name: name, Index: i, Weight: e.Weights[name], Route: r, nameB: []byte(name)}
		total += int(v.Weight)
		v.Window = reg.window(rc, name)
		v.Metrics = reg.versionMetrics(rc.Name, name)
		for _, addr := range vc.Backends {
			st, client, err := reg.backend(rc, name, &vc, addr)
			if err != nil {
				return nil, err
			}
			v.Backends = append(v.Backends, &Backend{Addr: addr, Client: client, State: st, Version: v})
		}
		r.Versions = append(r.Versions, v)
		if name == e.Stable {
			r.Stable = v
		}
		if name == rc.Candidate {
			r.Candidate = v
		}
		r.drainNS = append(r.drainNS, 0)
		if d, ok := e.Drain[name]; ok {
			r.drainNS[i] = d.UnixNano()
		}
	}
	if r.Stable == nil {
		return nil, fmt.Errorf("stable version %q does not exist", e.Stable)
	}
	if total != Slots {
		return nil, fmt.Errorf("weights total %s, not 100", config.Percent(total))
	}
	for _, ru := range rc.Rules {
		cr := rule{version: r.version(ru.Version)}
		switch {
		case ru.Header != "":
			cr.kind, cr.name = ruleHeader, []byte(ru.Header)
		case ru.Cookie != "":
			cr.kind, cr.name = ruleCookie, []byte(ru.Cookie)
		default:
			cr.kind, cr.name = ruleQuery, []byte(ru.Query)
		}
		if ru.Equals != nil {
			cr.hasEq, cr.equals = true, []byte(*ru.Equals)
		}
		if ru.Prefix != "" {
			cr.prefix = []byte(ru.Prefix)
		}
		if ru.Regex != "" {
			re, err := regexp.Compile(ru.Regex)
			if err != nil {
				return nil, err
			}
			cr.re = re
		}
		if cr.version == nil {
			return nil, fmt.Errorf("rule names unknown version %q", ru.Version)
		}
		r.rules = append(r.rules, cr)
	}
	if mv := rc.Mirror.Version; mv != "" && rc.Mirror.Percent > 0 {
		r.Mirror = r.version(mv)
		r.mirrorShare = uint64(rc.Mirror.Percent)
		r.MirrorMetrics = reg.mirrorMetrics(rc.Name, mv)
	}
	r.buildRing()
	r.buildSticky()
	return r, nil
}

func (r *Route) version(name string) *Version {
	for _, v := range r.Versions {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// Version returns the named version, or nil.
func (r *Route) Version(name string) *Version { return r.version(name) }

// Route returns the named route, or nil.
func (t *Table) Route(name string) *Route { return t.byName[name] }

// buildRing lays the weights over a ring of slots with nginx's smooth
// weighted round robin (https://github.com/phusion/nginx/commit/27e94984486058d73157038f7950a0a36ecc6e35),
// so consecutive picks interleave versions instead of sending bursts. The
// ring is shortened by the weights' greatest common divisor: whole
// percentages need 100 slots, not 10,000.
func (r *Route) buildRing() {
	g := Slots
	for _, v := range r.Versions {
		g = gcd(g, int(v.Weight))
	}
	n := Slots / g
	r.ring = make([]uint8, n)
	cur := make([]int, len(r.Versions))
	for s := 0; s < n; s++ {
		best := -1
		for i, v := range r.Versions {
			w := int(v.Weight) / g
			if w == 0 {
				continue
			}
			cur[i] += w
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= n
		r.ring[s] = uint8(best)
	}
}

// buildSticky lays the versions over the 10,000 sticky buckets in a fixed
// order: the versions other than stable and the candidate in file order,
// then stable, then the candidate last, ending at bucket 10,000. Each
// version owns a contiguous run of buckets, its weight long.
//
// The order is what makes sticky assignment monotone (SPEC "Which version
// serves a request"): raising the candidate's weight at stable's expense
// only moves the boundary between the two, so keys move from stable onto
// the candidate and nowhere else, and the other versions keep their runs.
// The candidate's run ends at the last bucket, so its users keep their
// buckets while its weight does not fall, whatever the others do. (An
// earlier order put the candidate first and stable last, so raising the
// candidate shifted every version in between and moved their users onto
// stable.)
func (r *Route) buildSticky() {
	order := make([]*Version, 0, len(r.Versions))
	for _, v := range r.Versions {
		if v != r.Stable && v != r.Candidate {
			order = append(order, v)
		}
	}
	order = append(order, r.Stable)
	if r.Candidate != nil && r.Candidate != r.Stable {
		order = append(order, r.Candidate)
	}
	end := 0
	for _, v := range order {
		end += int(v.Weight)
		r.stickyOrder = append(r.stickyOrder, uint8(v.Index))
		r.stickyEnd = append(r.stickyEnd, uint16(end))
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// buildMatch prepares host lookup: every exact host and every wildcard
// suffix gets its full candidate list (exact routes, the wildcards that
// cover it, and host-less routes), longest path_prefix first, ties to the
// most specific host.
func (t *Table) buildMatch() {
	spec := func(r *Route) int {
		switch {
		case r.host == "":
			return 0
		case strings.HasPrefix(r.host, "*."):
			return 1 + strings.Count(r.host, ".")
		}
		return 1000
	}
	sortRoutes := func(rs []*Route) {
		sort.SliceStable(rs, func(i, j int) bool {
			if len(rs[i].prefix) != len(rs[j].prefix) {
				return len(rs[i].prefix) > len(rs[j].prefix)
			}
			return spec(rs[i]) > spec(rs[j])
		})
	}
	var wilds []*Route
	for _, r := range t.Routes {
		switch {
		case r.host == "":
			t.any = append(t.any, r)
		case strings.HasPrefix(r.host, "*."):
			wilds = append(wilds, r)
		default:
			t.exact[r.host] = append(t.exact[r.host], r)
		}
	}
	covers := func(w *Route, host string) bool { // *.example.com covers a.example.com, a.b.example.com
		suf := w.host[1:]
		return strings.HasSuffix(host, suf) && len(host) > len(suf)
	}
	for h, rs := range t.exact {
		for _, w := range wilds {
			if covers(w, h) {
				rs = append(rs, w)
			}
		}
		rs = append(rs, t.any...)
		sortRoutes(rs)
		t.exact[h] = rs
	}
	for _, w := range wilds {
		suf := w.host[1:]
		if _, done := t.wild[suf]; done {
			continue
		}
		var rs []*Route
		for _, o := range wilds {
			if o.host == w.host || strings.HasSuffix(suf, o.host[1:]) {
				rs = append(rs, o)
			}
		}
		rs = append(rs, t.any...)
		sortRoutes(rs)
		t.wild[suf] = rs
	}
	sortRoutes(t.any)
}
