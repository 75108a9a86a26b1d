package proxy

import (
	"bytes"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/router"
)

// Per-client rate limit (issue 5, part 8): a token bucket
// (golang.org/x/time/rate) per client address, like nginx's limit_req
// keyed by $binary_remote_addr. The client is the TCP peer, or, when the
// peer is one of trusted_proxies, the last address in X-Forwarded-For
// that is not itself a trusted proxy; an X-Forwarded-For from anyone else
// is never believed. IPv6 clients are keyed by their /64, which is what
// one host is usually given, so that an attacker cannot mint a bucket per
// address. A client whose bucket has filled up again is forgotten (it
// would start from a full bucket anyway), so idle clients cost nothing.

// rateShards spreads the clients over locks.
const rateShards = 64

// maxRateClients bounds the clients remembered per shard; a new client
// beyond it is refused (429) until idle ones are swept, rather than let
// through unlimited.
const maxRateClients = 16384

// rateSweepEvery is how often a shard forgets its idle clients.
const rateSweepEvery = 10 * time.Second

// rateLimiter is the per-client limiter of one rate_limit setting. Safe
// for concurrent use.
type rateLimiter struct {
	cfg    config.RateLimit
	limit  rate.Limit
	shards [rateShards]rateShard
}

type rateShard struct {
	mu        sync.Mutex
	clients   map[netip.Addr]*rate.Limiter
	lastSweep time.Time
}

func newRateLimiter(cfg config.RateLimit, now time.Time) *rateLimiter {
	l := &rateLimiter{cfg: cfg, limit: rate.Limit(cfg.RequestsPerSecond)}
	for i := range l.shards {
		l.shards[i].clients = map[netip.Addr]*rate.Limiter{}
		l.shards[i].lastSweep = now
	}
	return l
}

// allow takes a token from client's bucket; without one it reports how
// long until there is one.
func (l *rateLimiter) allow(client netip.Addr, now time.Time) (bool, time.Duration) {
	s := &l.shards[shardOf(client)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastSweep) >= rateSweepEvery || (len(s.clients) >= maxRateClients && now.Sub(s.lastSweep) >= time.Second) {
		s.sweep(now, l.cfg.Burst)
	}
	lim := s.clients[client]
	if lim == nil {
		if len(s.clients) >= maxRateClients {
			return false, time.Second
		}
		lim = rate.NewLimiter(l.limit, l.cfg.Burst)
		s.clients[client] = lim
	}
	if lim.AllowN(now, 1) {
		return true, 0
	}
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return false, wait
}

// sweep forgets the clients whose bucket is full again. Caller holds s.mu.
func (s *rateShard) sweep(now time.Time, burst int) {
	s.lastSweep = now
	for k, lim := range s.clients {
		if lim.TokensAt(now) >= float64(burst) {
			delete(s.clients, k)
		}
	}
}

// size is the number of clients remembered (tests).
func (l *rateLimiter) size() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.clients)
		s.mu.Unlock()
	}
	return n
}

func shardOf(a netip.Addr) int {
	b := a.As16()
	var h uint32 = 2166136261
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % rateShards)
}

// rateLimit applies the current table's rate_limit to the request's client.
func (p *Proxy) rateLimit(ctx *fasthttp.RequestCtx, t *router.Table) (bool, time.Duration) {
	cfg := t.Config.RateLimit
	if cfg.RequestsPerSecond <= 0 {
		return true, 0
	}
	l := p.limiter.Load()
	if l == nil || l.cfg != cfg { // first use, or a reload changed the setting
		p.limiterMu.Lock()
		if l = p.limiter.Load(); l == nil || l.cfg != cfg {
			l = newRateLimiter(cfg, p.Now())
			p.limiter.Store(l)
		}
		p.limiterMu.Unlock()
	}
	return l.allow(clientKey(ctx, t), p.Now())
}

// clientKey is the client address the rate limit counts: see above.
func clientKey(ctx *fasthttp.RequestCtx, t *router.Table) netip.Addr {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	client := peer.Unmap()
	if isTrusted(client, t.Trusted) {
		lines := ctx.Request.Header.PeekAll(fasthttp.HeaderXForwardedFor)
		client = forwardedClient(client, lines, t.Trusted)
	}
	if client.Is6() {
		p, _ := client.Prefix(64)
		client = p.Addr()
	}
	return client
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedClient walks X-Forwarded-For from the right, past the trusted
// proxies, to the first address a trusted proxy vouches for. A token that
// is not an address ends the walk at the hop that added it.
func forwardedClient(peer netip.Addr, lines [][]byte, trusted []netip.Prefix) netip.Addr {
	client := peer
	for i := len(lines) - 1; i >= 0; i-- {
		list := lines[i]
		for len(list) > 0 {
			var tok []byte
			if j := bytes.LastIndexByte(list, ','); j >= 0 {
				tok, list = list[j+1:], list[:j]
			} else {
				tok, list = list, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 {
				continue
			}
			a, ok := parseForwarded(tok)
			if !ok {
				return client
			}
			client = a
			if !isTrusted(a, trusted) {
				return client
			}
		}
	}
	return client
}

// parseForwarded reads "1.2.3.4", "1.2.3.4:5678", "::1" or "[::1]:80".
func parseForwarded(tok []byte) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(string(tok)); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(string(tok)); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
