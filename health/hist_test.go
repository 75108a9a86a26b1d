package health

import (
	"math"
	"math/bits"
	"testing"
	"time"
)

// maxRelErr is the accuracy promised for 100µs..60s.
const maxRelErr = 0.02

func relErr(got, want time.Duration) float64 {
	return math.Abs(float64(got-want)) / float64(want)
}

func TestHistLayout(t *testing.T) {
	if got := histIndex(histMaxMicros * time.Microsecond); got != histLen-1 {
		t.Fatalf("histIndex(%dµs) = %d, want histLen-1 = %d", histMaxMicros, got, histLen-1)
	}
	// Every bucket's midpoint maps back to that bucket.
	for i := range histLen {
		if got := histIndex(histMid(i)); got != i {
			t.Fatalf("histIndex(histMid(%d) = %v) = %d, want %d", i, histMid(i), got, i)
		}
	}
	// Buckets tile 0..60s: stepping from one bucket's lower edge by its width
	// (1µs below 64µs, 1/32 of the power of two above) lands in the next one.
	i, us := 0, uint64(0)
	for ; us <= histMaxMicros; us += 1 << max(bits.Len64(us)-(histSubBits+1), 0) {
		if got := histIndex(time.Duration(us) * time.Microsecond); got != i {
			t.Fatalf("histIndex(%dµs) = %d, want %d", us, got, i)
		}
		i++
	}
	if i != histLen {
		t.Errorf("walked %d buckets up to %dµs, want %d", i, us, histLen)
	}
}

func TestHistClamp(t *testing.T) {
	tests := []struct {
		name    string
		latency time.Duration
		want    int
	}{
		{"negative", -time.Second, 0},
		{"zero", 0, 0},
		{"sub-microsecond", 999 * time.Nanosecond, 0},
		{"60s", 60 * time.Second, histLen - 1},
		{"above 60s", time.Hour, histLen - 1},
		{"max duration", math.MaxInt64, histLen - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := histIndex(tt.latency); got != tt.want {
				t.Errorf("histIndex(%v) = %d, want %d", tt.latency, got, tt.want)
			}
		})
	}
}

// TestHistRelativeError sweeps 100µs..60s geometrically, with nanosecond
// offsets and the edges of every power of two, and checks that the reported
// midpoint is within 2% of the value recorded.
func TestHistRelativeError(t *testing.T) {
	var values []time.Duration
	for v := 100 * time.Microsecond; v <= 60*time.Second; v = v*1003/1000 + 7 {
		values = append(values, v)
	}
	for p := time.Duration(128); p <= histMaxMicros; p *= 2 {
		edge := p * time.Microsecond
		values = append(values, edge-1, edge, edge+1)
	}
	values = append(values, 100*time.Microsecond, 60*time.Second)

	worst, worstAt := 0.0, time.Duration(0)
	for _, v := range values {
		got := histMid(histIndex(v))
		if e := relErr(got, v); e > worst {
			worst, worstAt = e, v
		}
	}
	if worst > maxRelErr {
		t.Fatalf("worst relative error %.4f at %v over %d values, want <= %v", worst, worstAt, len(values), maxRelErr)
	}
	// The layout promises 1/64; a test that only checks 2% would miss a
	// halving of the sub-buckets.
	if worst > 1.0/64+1e-9 {
		t.Errorf("worst relative error %.4f at %v, want <= 1/64", worst, worstAt)
	}
	t.Logf("worst relative error %.4f at %v over %d values", worst, worstAt, len(values))
}

func TestPercentile(t *testing.T) {
	var sum [histLen]uint64
	var total uint64
	for ms := 1; ms <= 100; ms++ {
		sum[histIndex(time.Duration(ms)*time.Millisecond)]++
		total++
	}
	tests := []struct {
		name string
		p    float64
		want time.Duration
	}{
		{"p1", 1, time.Millisecond},
		{"p50", 50, 50 * time.Millisecond},
		{"p99", 99, 99 * time.Millisecond},
		{"p100", 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := percentile(&sum, total, tt.p)
			if relErr(got, tt.want) > maxRelErr {
				t.Errorf("percentile(%v) = %v, want %v within 2%%", tt.p, got, tt.want)
			}
		})
	}
	if got := percentile(&[histLen]uint64{}, 0, 99); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
}
