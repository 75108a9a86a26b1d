package health

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear, the layout of Gil Tene's HDR histogram
// (https://hdrhistogram.github.io/HdrHistogram/): values are whole
// microseconds; below 2*histSub they have one bucket each; above, every power
// of two is split into histSub linear sub-buckets. A bucket is therefore at most
// 1/histSub of its lower bound wide, and its midpoint is within 1/(2*histSub)
// = 1.6% of any value in it, for every latency from 32µs up to histMaxMicros.
// A bucket's index is found with one bits.Len64 and two shifts, no loop.
const (
	histSubBits = 5
	histSub     = 1 << histSubBits // linear sub-buckets per power of two

	// histMaxMicros is the largest latency told apart (60s); longer ones are
	// counted in the last bucket.
	histMaxMicros = 60_000_000

	// histLen is histIndex(histMaxMicros)+1; TestHistLayout keeps it honest.
	histLen = 698
)

// hist counts latencies of one second of one version. Its counters are atomic,
// so it is safe for concurrent use: any number of goroutines may record into it
// while others read it.
type hist struct {
	counts [histLen]atomic.Uint32
}

// record counts one latency. It does not allocate.
func (h *hist) record(latency time.Duration) {
	h.counts[histIndex(latency)].Add(1)
}

// addTo adds h's counters to sum and returns how many values it held.
func (h *hist) addTo(sum *[histLen]uint64) uint64 {
	var total uint64
	for i := range h.counts {
		c := uint64(h.counts[i].Load())
		sum[i] += c
		total += c
	}
	return total
}

// histIndex is the bucket that counts latency. Negative latencies count as 0,
// latencies above histMaxMicros count in the last bucket.
func histIndex(latency time.Duration) int {
	us := uint64(max(latency, 0) / time.Microsecond)
	if us > histMaxMicros {
		us = histMaxMicros
	}
	// Below 2*histSub the shift is 0 and the index is the value itself; from
	// there each power of two adds histSub buckets.
	shift := bits.Len64(us|(2*histSub-1)) - (histSubBits + 1)
	return shift<<histSubBits + int(us>>shift)
}

// histMid is the midpoint of bucket i, the value a percentile reports.
func histMid(i int) time.Duration {
	shift := max(i>>histSubBits-1, 0)
	lo := uint64(i-shift<<histSubBits) << shift
	width := uint64(1) << shift
	return time.Duration(lo)*time.Microsecond + time.Duration(width)*time.Microsecond/2
}

// percentile is the nearest-rank percentile p (0 < p <= 100) of the merged
// counts, reported as its bucket's midpoint; 0 when total is 0.
func percentile(sum *[histLen]uint64, total uint64, p float64) time.Duration {
	if total == 0 {
		return 0
	}
	// total*p is exact for whole p, so Ceil sees no rounding noise.
	rank := min(max(uint64(math.Ceil(float64(total)*p/100)), 1), total)
	var seen uint64
	for i, c := range sum {
		seen += c
		if seen >= rank {
			return histMid(i)
		}
	}
	return histMid(histLen - 1)
}
