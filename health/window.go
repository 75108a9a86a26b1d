// Package health measures the versions behind veer's routes and judges them:
// per-version sliding windows of request counts and latencies, and the
// rollback judge of SPEC.md's "Automatic rollback".
package health

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSpan is the history a Window keeps when NewWindow is given none.
const DefaultSpan = 30 * time.Second

// emptySec marks a bucket that holds no second: never used, being reset, or
// released. It is below every real second, so a bucket in this state is
// always older than the one a Record wants.
const emptySec = math.MinInt64

// Window is a sliding window of 1-second buckets for one route version: a ring
// indexed by unix second, each bucket holding that second's request and error
// counts and an HDR latency histogram (https://hdrhistogram.github.io/HdrHistogram/,
// see hist.go).
//
// Window is safe for concurrent use and must not be copied. Record is
// lock-free and allocation-free: two atomic adds once the current second's
// bucket exists. The first Record of a new second takes a short lock to reset
// the bucket it reuses and allocates that second's histogram (2.8 KB), so an
// idle version costs its bucket headers (24 bytes a second) and nothing more
// once Stats has released its old histograms. Stats takes no lock to read; it
// takes the same lock only to release histograms too old to be read again, so
// it never holds up a Record of an existing second.
type Window struct {
	mu      sync.Mutex // serialises bucket resets; never held by a Record of an existing second
	buckets []bucket
	secs    int64 // history answered for, in seconds: len(buckets)-1
}

// bucket is one second of one version. sec is written last when the bucket is
// reset, so a reader that sees the same sec before and after loading n and h
// has read that second's values.
type bucket struct {
	sec atomic.Int64         // the unix second held, or emptySec
	n   atomic.Uint64        // requests<<32 | errors, one add per Record
	h   atomic.Pointer[hist] // nil until the second's first Record
}

// Requests and errors of a bucket share one word so one atomic add counts
// both, and a reader sees them consistent. 2^32 requests a second per version
// is out of reach.
const (
	reqShift = 32
	errMask  = 1<<reqShift - 1
)

// NewWindow returns an empty Window that answers for at least span of history:
// span rounded up to whole seconds, plus one bucket for the current second.
// span <= 0 means DefaultSpan.
func NewWindow(span time.Duration) *Window {
	if span <= 0 {
		span = DefaultSpan
	}
	secs := int64((span + time.Second - 1) / time.Second)
	w := &Window{buckets: make([]bucket, secs+1), secs: secs}
	for i := range w.buckets {
		w.buckets[i].sec.Store(emptySec)
	}
	return w
}

// Span is how much history w answers for: the longest window Stats takes.
func (w *Window) Span() time.Duration {
	return time.Duration(w.secs) * time.Second
}

// Record counts one request that ended at now, took latency, and failed or
// not. It is the hot path: lock-free and allocation-free except for the first
// Record of each second (see Window). A Record for a second whose bucket
// already holds a newer second is dropped: the clock went back by more than
// Span.
func (w *Window) Record(now time.Time, latency time.Duration, failed bool) {
	s := now.Unix()
	b := &w.buckets[uint64(s)%uint64(len(w.buckets))]
	if b.sec.Load() != s && !w.roll(b, s) {
		return
	}
	d := uint64(1) << reqShift
	if failed {
		d++
	}
	b.n.Add(d)
	// h is nil only if a Stats far ahead of now released this bucket between
	// the two loads; the request is still counted.
	if h := b.h.Load(); h != nil {
		h.record(latency)
	}
}

// roll makes b hold second s, resetting it if it held an older one. It
// reports false if b holds a newer second.
func (w *Window) roll(b *bucket, s int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := b.sec.Load()
	if cur == s {
		return true // another Record reset it while we waited
	}
	if cur > s {
		return false
	}
	// Readers skip the bucket while it is empty; a Stats that loaded the old
	// histogram keeps reading it intact, as it is replaced, not cleared.
	b.sec.Store(emptySec)
	b.n.Store(0)
	b.h.Store(new(hist))
	b.sec.Store(s)
	return true
}

// Stats is what a Window saw over a stretch of time.
type Stats struct {
	Requests  uint64
	Errors    uint64
	ErrorRate float64       // percent 0..100, 0 when Requests == 0
	P50, P99  time.Duration // bucket midpoints, within 1.6% from 100µs to 60s; 0 when no requests
}

// Stats sums the whole seconds in (now-window, now]: window is rounded up to
// whole seconds and clamped to Span; window <= 0 means Span. The current
// second counts as far as it has gone. Percentiles merge the seconds'
// histograms and report the nearest-rank bucket's midpoint.
//
// Stats is safe to call concurrently with Record and other Stats, and does not
// allocate. It is a consistent read of each second, not of the window as a
// whole: requests recorded while it runs may or may not be counted. As a side
// effect it releases the histograms of seconds that no Stats at now or later
// can read, so the memory of a version that went idle is given back.
func (w *Window) Stats(now time.Time, window time.Duration) Stats {
	secs := w.secs
	if window > 0 && window < w.Span() {
		secs = int64((window + time.Second - 1) / time.Second)
	}
	s := now.Unix()
	var (
		sum   [histLen]uint64
		st    Stats
		total uint64
	)
	for i := range w.buckets {
		b := &w.buckets[i]
		sec := b.sec.Load()
		if sec == emptySec || sec > s {
			continue
		}
		if sec <= s-secs {
			// Out of this window. A second no window at now or later can
			// reach (sec <= s-Span) is garbage; two seconds' slack spare it
			// for a concurrent Stats whose now lags this one's.
			if sec < s-w.secs-1 && b.h.Load() != nil {
				w.release(b, sec)
			}
			continue
		}
		n := b.n.Load()
		h := b.h.Load()
		if b.sec.Load() != sec {
			continue // reset for a newer second while we read
		}
		st.Requests += n >> reqShift
		st.Errors += n & errMask
		if h != nil {
			total += h.addTo(&sum)
		}
	}
	if st.Requests > 0 {
		st.ErrorRate = float64(st.Errors) * 100 / float64(st.Requests)
	}
	st.P50 = percentile(&sum, total, 50)
	st.P99 = percentile(&sum, total, 99)
	return st
}

// release empties b if it still holds second sec.
func (w *Window) release(b *bucket, sec int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if b.sec.Load() != sec {
		return
	}
	b.sec.Store(emptySec)
	b.n.Store(0)
	b.h.Store(nil)
}
