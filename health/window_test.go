package health

import (
	"sync"
	"testing"
	"time"
)

// t0 is an arbitrary whole second; tests move the clock from it by hand.
var t0 = time.Unix(1_700_000_000, 0)

func at(sec float64) time.Time {
	return t0.Add(time.Duration(sec * float64(time.Second)))
}

func TestNewWindowSpan(t *testing.T) {
	tests := []struct {
		name        string
		span        time.Duration
		wantSpan    time.Duration
		wantBuckets int
	}{
		{"zero means 30s", 0, 30 * time.Second, 31},
		{"negative means 30s", -time.Second, 30 * time.Second, 31},
		{"whole seconds", 30 * time.Second, 30 * time.Second, 31},
		{"rounded up", 1500 * time.Millisecond, 2 * time.Second, 3},
		{"below a second", time.Nanosecond, time.Second, 2},
		{"five minutes", 5 * time.Minute, 5 * time.Minute, 301},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWindow(tt.span)
			if got := w.Span(); got != tt.wantSpan {
				t.Errorf("NewWindow(%v).Span() = %v, want %v", tt.span, got, tt.wantSpan)
			}
			if got := len(w.buckets); got != tt.wantBuckets {
				t.Errorf("NewWindow(%v) has %d buckets, want %d", tt.span, got, tt.wantBuckets)
			}
		})
	}
}

func TestStatsEmpty(t *testing.T) {
	w := NewWindow(0)
	if got, want := w.Stats(t0, 30*time.Second), (Stats{}); got != want {
		t.Errorf("Stats of an empty window = %+v, want %+v", got, want)
	}
}

// TestStatsKnownInput records 100 requests of 1ms..100ms, every 10th failed,
// spread over the last five seconds.
func TestStatsKnownInput(t *testing.T) {
	w := NewWindow(30 * time.Second)
	for ms := 1; ms <= 100; ms++ {
		w.Record(at(float64(ms%5)+0.5), time.Duration(ms)*time.Millisecond, ms%10 == 0)
	}
	got := w.Stats(at(4.9), 30*time.Second)
	if got.Requests != 100 || got.Errors != 10 || got.ErrorRate != 10 {
		t.Errorf("Stats = %d requests, %d errors, %v%%; want 100, 10, 10%%", got.Requests, got.Errors, got.ErrorRate)
	}
	for _, p := range []struct {
		name      string
		got, want time.Duration
	}{
		{"p50", got.P50, 50 * time.Millisecond},
		{"p99", got.P99, 99 * time.Millisecond},
	} {
		if relErr(p.got, p.want) > maxRelErr {
			t.Errorf("%s = %v, want %v within 2%%", p.name, p.got, p.want)
		}
	}
}

// TestStatsExpiry records one request a second from t0 to t0+30s, the first
// one failed and slow, and reads the window as the clock moves on.
func TestStatsExpiry(t *testing.T) {
	record := func() *Window {
		w := NewWindow(30 * time.Second)
		w.Record(at(0), 5*time.Second, true)
		for s := 1; s <= 30; s++ {
			w.Record(at(float64(s)+0.25), 10*time.Millisecond, false)
		}
		return w
	}
	tests := []struct {
		name         string
		now          float64
		window       time.Duration
		wantRequests uint64
		wantErrors   uint64
	}{
		{"all 31 seconds are more than the span", 30, 30 * time.Second, 30, 0},
		{"at t0+29 the first is in", 29, 30 * time.Second, 30, 1},
		{"at t0+31 t0 and t0+1 are out", 31, 30 * time.Second, 29, 0},
		{"end of the second is the same second", 30.999, 30 * time.Second, 30, 0},
		{"10s window", 30, 10 * time.Second, 10, 0},
		{"fractional window rounds up", 30, 9500 * time.Millisecond, 10, 0},
		{"window above span is clamped", 30, time.Hour, 30, 0},
		{"zero window means span", 30, 0, 30, 0},
		{"1s window is the current second", 30, time.Second, 1, 0},
		{"all expired", 61, 30 * time.Second, 0, 0},
		{"before anything", -1, 30 * time.Second, 0, 0},
		{"a reader behind sees only its past", 10, 30 * time.Second, 11, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := record().Stats(at(tt.now), tt.window)
			if got.Requests != tt.wantRequests || got.Errors != tt.wantErrors {
				t.Errorf("Stats(t0+%vs, %v) = %d requests, %d errors; want %d, %d",
					tt.now, tt.window, got.Requests, got.Errors, tt.wantRequests, tt.wantErrors)
			}
			// The slow request decides p99 only while it is in the window.
			wantP99 := 10 * time.Millisecond
			switch {
			case tt.wantRequests == 0:
				wantP99 = 0
			case tt.wantErrors == 1:
				wantP99 = 5 * time.Second
			}
			if wantP99 == 0 {
				if got.P99 != 0 {
					t.Errorf("p99 = %v, want 0", got.P99)
				}
			} else if relErr(got.P99, wantP99) > maxRelErr {
				t.Errorf("p99 = %v, want %v within 2%%", got.P99, wantP99)
			}
		})
	}
}

// TestRecordReusesBucket checks that a bucket is reset when its slot comes
// round again, and that a Record for a second already overwritten is dropped.
func TestRecordReusesBucket(t *testing.T) {
	w := NewWindow(30 * time.Second) // 31 buckets: t0 and t0+31 share one
	w.Record(at(0), time.Second, true)
	w.Record(at(31), time.Millisecond, false)
	w.Record(at(0.5), time.Second, true) // the clock went back by more than the span

	if got := w.Stats(at(31), 30*time.Second); got.Requests != 1 || got.Errors != 0 {
		t.Errorf("Stats(t0+31s) = %d requests, %d errors; want 1, 0", got.Requests, got.Errors)
	}
	if got := w.Stats(at(0), 30*time.Second); got.Requests != 0 {
		t.Errorf("Stats(t0) = %d requests, want 0: its second was overwritten", got.Requests)
	}
}

// TestStatsReleasesIdle checks that an idle window gives its histograms back,
// and that recording into it afterwards works.
func TestStatsReleasesIdle(t *testing.T) {
	w := NewWindow(30 * time.Second)
	for s := range 5 {
		w.Record(at(float64(s)), time.Millisecond, false)
	}
	countHists := func() int {
		n := 0
		for i := range w.buckets {
			if w.buckets[i].h.Load() != nil {
				n++
			}
		}
		return n
	}
	if got := countHists(); got != 5 {
		t.Fatalf("histograms after 5 busy seconds = %d, want 5", got)
	}
	// At t0+34 no window reaches before t0+5; t0..t0+2 are more than the two
	// seconds of slack behind that.
	w.Stats(at(34), 30*time.Second)
	if got := countHists(); got != 2 {
		t.Errorf("histograms after Stats(t0+34s) = %d, want 2", got)
	}
	w.Stats(at(100), 30*time.Second)
	if got := countHists(); got != 0 {
		t.Errorf("histograms after Stats(t0+100s) = %d, want 0", got)
	}
	w.Record(at(100), 3*time.Millisecond, true)
	got := w.Stats(at(100), 30*time.Second)
	if got.Requests != 1 || got.Errors != 1 || relErr(got.P99, 3*time.Millisecond) > maxRelErr {
		t.Errorf("Stats after idling = %+v, want 1 request, 1 error, p99 3ms", got)
	}
}

// TestRecordConcurrent has many goroutines record across several seconds,
// crossing bucket resets, while others read; the totals must be exact.
func TestRecordConcurrent(t *testing.T) {
	const (
		goroutines = 16
		perSecond  = 500 // per goroutine
		seconds    = 5
	)
	w := NewWindow(30 * time.Second)
	// Fill the ring once so the seconds recorded below reuse buckets.
	for s := range 31 {
		w.Record(at(float64(s-31)), time.Hour, true)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for s := range seconds {
				for i := range perSecond {
					failed := i%4 == 0
					w.Record(at(float64(s)+float64(i)/perSecond), time.Duration(g+1)*time.Millisecond, failed)
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					w.Stats(at(seconds), 30*time.Second)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	got := w.Stats(at(seconds-1), seconds*time.Second) // leaves out the ring's first fill
	const wantRequests = goroutines * perSecond * seconds
	const wantErrors = wantRequests / 4
	if got.Requests != wantRequests || got.Errors != wantErrors {
		t.Errorf("Stats = %d requests, %d errors; want %d, %d", got.Requests, got.Errors, wantRequests, wantErrors)
	}
	var sum [histLen]uint64
	var total uint64
	for i := range w.buckets {
		b := &w.buckets[i]
		if s := b.sec.Load(); s >= t0.Unix() && b.h.Load() != nil {
			total += b.h.Load().addTo(&sum)
		}
	}
	if total != wantRequests {
		t.Errorf("histograms hold %d latencies, want %d", total, wantRequests)
	}
	if want := time.Duration(goroutines) * time.Millisecond; relErr(got.P99, want) > maxRelErr {
		t.Errorf("p99 = %v, want %v within 2%%", got.P99, want)
	}
}

func BenchmarkWindowRecord(b *testing.B) {
	w := NewWindow(30 * time.Second)
	now := t0
	w.Record(now, time.Millisecond, false)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		w.Record(now, time.Duration(i&1023)*time.Millisecond, i&63 == 0)
	}
}

func BenchmarkWindowRecordParallel(b *testing.B) {
	w := NewWindow(30 * time.Second)
	now := t0
	w.Record(now, time.Millisecond, false)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			w.Record(now, time.Duration(i&1023)*time.Millisecond, i&63 == 0)
		}
	})
}

func BenchmarkWindowStats(b *testing.B) {
	w := NewWindow(30 * time.Second)
	for s := range 31 {
		for i := range 1000 {
			w.Record(at(float64(s)), time.Duration(i)*time.Millisecond, i%50 == 0)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		w.Stats(at(30), 30*time.Second)
	}
}
