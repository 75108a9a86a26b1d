package admin

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	// sweepEvery is how often idle clients are forgotten.
	sweepEvery = time.Minute
	// maxClients bounds how many clients the limiter remembers. When that
	// many are all active, a new client gets 429 until some go idle: the
	// memory of the admin listener stays bounded under a flood from many
	// addresses.
	maxClients = 10_000
)

// limiter is a per-client token bucket (golang.org/x/time/rate) keyed by
// client IP: rps requests per second, burst twice that. A client whose
// bucket has filled up again is idle and is forgotten at the next sweep;
// forgetting it loses nothing, since a new bucket starts full. Safe for
// concurrent use.
type limiter struct {
	rps   rate.Limit
	burst int
	now   func() time.Time

	mu        sync.Mutex
	clients   map[string]*rate.Limiter
	lastSweep time.Time
}

func newLimiter(rps float64, now func() time.Time) *limiter {
	return &limiter{
		rps:       rate.Limit(rps),
		burst:     max(1, int(math.Ceil(2*rps))),
		now:       now,
		clients:   map[string]*rate.Limiter{},
		lastSweep: now(),
	}
}

// allow takes a token of client key's bucket. When there is none it
// returns false and how long until there is.
func (l *limiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery || (len(l.clients) >= maxClients && now.Sub(l.lastSweep) >= time.Second) {
		l.sweep(now)
	}
	lim := l.clients[key]
	if lim == nil {
		if len(l.clients) >= maxClients {
			return false, time.Second
		}
		lim = rate.NewLimiter(l.rps, l.burst)
		l.clients[key] = lim
	}
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets idle clients. Caller holds l.mu.
func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, lim := range l.clients {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.clients, k)
		}
	}
}

// size is how many clients are remembered (tests).
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}
