package router

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Match returns the route for host (as sent, possibly with a port and in
// any case) and path, or nil. It allocates nothing for hosts of up to 256
// bytes (a DNS name has at most 253).
func (t *Table) Match(host, path []byte) *Route {
	var buf [256]byte
	dst := buf[:0]
	if len(host) > len(buf) {
		dst = make([]byte, 0, len(host)) // not a DNS name, but its suffix may still match a wildcard
	}
	h := lowerHost(dst, host)
	if rs, ok := t.exact[string(h)]; ok {
		return firstPrefix(rs, path)
	}
	if len(t.wild) > 0 {
		for i := 0; i < len(h); i++ {
			if h[i] == '.' {
				if rs, ok := t.wild[string(h[i:])]; ok {
					return firstPrefix(rs, path)
				}
			}
		}
	}
	return firstPrefix(t.any, path)
}

func firstPrefix(rs []*Route, path []byte) *Route {
	for _, r := range rs {
		if bytes.HasPrefix(path, r.prefix) {
			return r
		}
	}
	return nil
}

// lowerHost appends host without its port, lower-cased, to dst, which
// must have room for it.
func lowerHost(dst, host []byte) []byte {
	if n := len(host); n > 0 && host[0] == '[' { // [::1]:8080
		if i := bytes.IndexByte(host, ']'); i > 0 {
			host = host[:i+1]
		}
	} else if i := bytes.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	if n := len(host); n > 0 && host[n-1] == '.' { // absolute FQDN
		host = host[:n-1]
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// How says why a version was chosen.
type How uint8

// The reasons, in SPEC's order of precedence.
const (
	ByOverride How = iota
	ByRule
	ByCookie
	ByHeader
	ByWeight
)

// PickVersion chooses the version for req: the override header, the first
// matching rule, the sticky cookie, the sticky header, then the weights
// (SPEC "Which version serves a request"). now is unix nanoseconds, for the
// drain of cookie sessions. It allocates nothing: a rule on the query
// string parses the URI into the request's own, reused buffers.
func (r *Route) PickVersion(req *fasthttp.Request, now int64) (*Version, How) {
	h := &req.Header
	if r.override != nil {
		if val := h.PeekBytes(r.override); len(val) > 0 {
			if v := r.byName(val); v != nil {
				return v, ByOverride
			}
		}
	}
	for i := range r.rules {
		ru := &r.rules[i]
		var val []byte
		var present bool
		switch ru.kind {
		case ruleHeader:
			val = h.PeekBytes(ru.name)
			present = val != nil
		case ruleCookie:
			val = h.CookieBytes(ru.name)
			present = val != nil
		case ruleQuery:
			args := req.URI().QueryArgs()
			val = args.PeekBytes(ru.name)
			present = args.HasBytes(ru.name)
		}
		if present && ru.match(val) {
			return ru.version, ByRule
		}
	}
	if r.stickyC != nil {
		if val := h.CookieBytes(r.stickyC); len(val) > 0 {
			if v := r.byName(val); v != nil && (v.Weight > 0 || now < r.drainNS[v.Index]) {
				return v, ByCookie
			}
		}
	}
	if r.stickyH != nil {
		if val := h.PeekBytes(r.stickyH); len(val) > 0 {
			return r.Sticky(val), ByHeader
		}
	}
	return r.Weighted(), ByWeight
}

func (ru *rule) match(val []byte) bool {
	switch {
	case ru.hasEq:
		return bytes.Equal(val, ru.equals)
	case ru.prefix != nil:
		return bytes.HasPrefix(val, ru.prefix)
	case ru.re != nil:
		return ru.re.Match(val)
	}
	return true
}

func (r *Route) byName(name []byte) *Version {
	for _, v := range r.Versions {
		if bytes.Equal(v.nameB, name) {
			return v
		}
	}
	return nil
}

// Weighted picks by weight from the precomputed ring: one atomic add.
func (r *Route) Weighted() *Version {
	n := r.ringPos.Add(1) - 1
	return r.Versions[r.ring[n%uint64(len(r.ring))]]
}

// Bucket is the sticky bucket of key on this route: FNV-1a 64 of the route
// name and the key, modulo 10,000.
func (r *Route) Bucket(key []byte) int {
	h := r.hashSeed
	for _, c := range key {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return int(h % Slots)
}

// Sticky returns the version that owns key's bucket.
func (r *Route) Sticky(key []byte) *Version {
	b := uint16(r.Bucket(key))
	for i, end := range r.stickyEnd {
		if b < end {
			return r.Versions[r.stickyOrder[i]]
		}
	}
	return r.Stable // unreachable: the ends reach 10,000
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// PickBackend returns the next available backend of v in round robin, or
// nil when none is up and not ejected at now (unix ns).
func (v *Version) PickBackend(now int64) *Backend {
	n := uint32(len(v.Backends))
	if n == 1 {
		if b := v.Backends[0]; b.State.Available(now) {
			return b
		}
		return nil
	}
	start := v.rr.Add(1)
	for i := uint32(0); i < n; i++ {
		if b := v.Backends[(start+i)%n]; b.State.Available(now) {
			return b
		}
	}
	return nil
}

// PickOther returns the first available backend of v after tried, in
// v's order, for a retry on another backend; nil when there is none. It
// leaves the round robin alone: a retry that advanced it would shift the
// rotation so that the failing backend took every request's first try.
func (v *Version) PickOther(now int64, tried *Backend) *Backend {
	n := len(v.Backends)
	start := 0
	for i, b := range v.Backends {
		if b == tried {
			start = i + 1
			break
		}
	}
	for i := range n {
		if b := v.Backends[(start+i)%n]; b != tried && b.State.Available(now) {
			return b
		}
	}
	return nil
}

// NameBytes is the version's name, for response headers. Do not modify.
func (v *Version) NameBytes() []byte { return v.nameB }

// String names the reason, for logs and test messages.
func (h How) String() string {
	switch h {
	case ByOverride:
		return "override"
	case ByRule:
		return "rule"
	case ByCookie:
		return "cookie"
	case ByHeader:
		return "header"
	case ByWeight:
		return "weight"
	}
	return "unknown"
}

// MirrorNow reports whether this request should be copied to r.Mirror: a
// counter spreads exactly MirrorShare of the requests, with no randomness.
func (r *Route) MirrorNow() bool {
	if r.Mirror == nil {
		return false
	}
	n := r.mirrorPos.Add(1) - 1
	return (n*r.mirrorShare)%Slots < r.mirrorShare
}
