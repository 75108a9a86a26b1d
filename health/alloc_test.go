//go:build !race

package health

import (
	"testing"
	"time"
)

// TestRecordAllocs holds the hot path to zero allocations once the second's
// histogram exists (the race detector's instrumentation allocates, hence the
// build tag).
func TestRecordAllocs(t *testing.T) {
	w := NewWindow(30 * time.Second)
	w.Record(t0, time.Millisecond, false)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		w.Record(t0.Add(time.Duration(i)*time.Microsecond), time.Duration(i)*time.Millisecond, i%7 == 0)
	})
	if allocs != 0 {
		t.Errorf("Record allocates %v times a call, want 0", allocs)
	}
}

// TestStatsAllocs keeps Stats, run every second for every version, off the
// heap.
func TestStatsAllocs(t *testing.T) {
	w := NewWindow(30 * time.Second)
	for s := range 31 {
		w.Record(at(float64(s)), time.Duration(s)*time.Millisecond, s%3 == 0)
	}
	allocs := testing.AllocsPerRun(100, func() {
		w.Stats(at(30), 30*time.Second)
	})
	if allocs != 0 {
		t.Errorf("Stats allocates %v times a call, want 0", allocs)
	}
}
