package health

import (
	"testing"
	"time"
)

// stats builds the Stats a Window would report for requests with errors
// failed and the given p99.
func stats(requests, errors uint64, p99 time.Duration) Stats {
	s := Stats{Requests: requests, Errors: errors, P50: p99 / 2, P99: p99}
	if requests > 0 {
		s.ErrorRate = float64(errors) * 100 / float64(requests)
	}
	return s
}

func TestJudge(t *testing.T) {
	base := Limits{MaxErrorRate: 5, MinRequests: 20, Window: 30 * time.Second}
	with := func(f func(*Limits)) Limits {
		l := base
		f(&l)
		return l
	}
	healthyStable := stats(1000, 10, 420*time.Millisecond)
	tests := []struct {
		name      string
		limits    Limits
		candidate Stats
		stable    Stats
		want      Verdict
	}{
		{
			name:      "no verdict below min requests",
			limits:    with(func(l *Limits) { l.MinRequests = 20 }),
			candidate: stats(3, 1, 10*time.Millisecond), // 33% failed
			stable:    healthyStable,
			want:      Verdict{},
		},
		{
			name:      "one short of min requests",
			limits:    base,
			candidate: stats(19, 19, time.Millisecond),
			stable:    healthyStable,
			want:      Verdict{},
		},
		{
			name:      "no verdict on no requests even with min 0",
			limits:    with(func(l *Limits) { l.MinRequests = 0; l.MaxErrorRate = -1 }),
			candidate: Stats{},
			stable:    healthyStable,
			want:      Verdict{},
		},
		{
			name:      "2% never fails a 5% limit",
			limits:    base,
			candidate: stats(1000, 20, 10*time.Millisecond),
			stable:    healthyStable,
			want:      Verdict{Enough: true},
		},
		{
			name:      "exactly 5% does not fail",
			limits:    base,
			candidate: stats(20, 1, 10*time.Millisecond),
			stable:    healthyStable,
			want:      Verdict{Enough: true},
		},
		{
			name:      "exactly 5% of 1000 does not fail",
			limits:    base,
			candidate: stats(1000, 50, 10*time.Millisecond),
			stable:    healthyStable,
			want:      Verdict{Enough: true},
		},
		{
			name:      "8.1% fails",
			limits:    base,
			candidate: stats(1000, 81, 10*time.Millisecond),
			stable:    healthyStable,
			want: Verdict{Enough: true, Fail: true, Kind: "error-rate",
				Reason: "error rate 8.1% > 5% over 30s, 1000 requests"},
		},
		{
			name:      "8% fails",
			limits:    base,
			candidate: stats(100, 8, 10*time.Millisecond),
			stable:    healthyStable,
			want: Verdict{Enough: true, Fail: true, Kind: "error-rate",
				Reason: "error rate 8.0% > 5% over 30s, 100 requests"},
		},
		{
			name:      "fractional limit as given, window in minutes",
			limits:    with(func(l *Limits) { l.MaxErrorRate = 0.5; l.Window = 5 * time.Minute; l.MinRequests = 200 }),
			candidate: stats(200, 2, 10*time.Millisecond),
			stable:    healthyStable,
			want: Verdict{Enough: true, Fail: true, Kind: "error-rate",
				Reason: "error rate 1.0% > 0.5% over 5m, 200 requests"},
		},
		{
			name:      "error rate increase over stable",
			limits:    with(func(l *Limits) { l.MaxErrorRate = 10; l.MaxErrorRateIncrease = 5 }),
			candidate: stats(200, 14, 10*time.Millisecond),
			stable:    stats(1000, 10, 10*time.Millisecond),
			want: Verdict{Enough: true, Fail: true, Kind: "error-rate",
				Reason: "error rate 7.0% > stable 1.0% + 5 points over 30s, 200 requests"},
		},
		{
			name:      "error rate increase exactly at the limit does not fail",
			limits:    with(func(l *Limits) { l.MaxErrorRate = 10; l.MaxErrorRateIncrease = 5 }),
			candidate: stats(200, 12, 10*time.Millisecond),
			stable:    stats(1000, 10, 10*time.Millisecond),
			want:      Verdict{Enough: true},
		},
		{
			name:      "error rate increase off",
			limits:    with(func(l *Limits) { l.MaxErrorRate = 10 }),
			candidate: stats(200, 14, 10*time.Millisecond),
			stable:    stats(1000, 0, 10*time.Millisecond),
			want:      Verdict{Enough: true},
		},
		{
			name:      "absolute error rate is checked before the increase",
			limits:    with(func(l *Limits) { l.MaxErrorRateIncrease = 1 }),
			candidate: stats(100, 9, 10*time.Millisecond),
			stable:    stats(1000, 0, 10*time.Millisecond),
			want: Verdict{Enough: true, Fail: true, Kind: "error-rate",
				Reason: "error rate 9.0% > 5% over 30s, 100 requests"},
		},
		{
			name:      "p99 over ratio of stable's",
			limits:    with(func(l *Limits) { l.MaxP99Ratio = 1.1 }),
			candidate: stats(300, 0, 812*time.Millisecond+317*time.Microsecond),
			stable:    healthyStable,
			want: Verdict{Enough: true, Fail: true, Kind: "latency",
				Reason: "p99 812ms > 1.1 x stable p99 420ms over 30s, 300 requests"},
		},
		{
			name:      "p99 within ratio",
			limits:    with(func(l *Limits) { l.MaxP99Ratio = 1.1 }),
			candidate: stats(300, 0, 462*time.Millisecond),
			stable:    healthyStable,
			want:      Verdict{Enough: true},
		},
		{
			name:      "p99 ratio needs min requests on stable",
			limits:    with(func(l *Limits) { l.MaxP99Ratio = 1.1 }),
			candidate: stats(300, 0, 2*time.Second),
			stable:    stats(19, 0, 10*time.Millisecond),
			want:      Verdict{Enough: true},
		},
		{
			name:      "p99 ratio needs a stable p99",
			limits:    with(func(l *Limits) { l.MaxP99Ratio = 1.1 }),
			candidate: stats(300, 0, 2*time.Second),
			stable:    Stats{Requests: 100},
			want:      Verdict{Enough: true},
		},
		{
			name:      "p99 over max",
			limits:    with(func(l *Limits) { l.MaxP99 = 2 * time.Second }),
			candidate: stats(300, 0, 2100*time.Millisecond),
			stable:    healthyStable,
			want: Verdict{Enough: true, Fail: true, Kind: "latency",
				Reason: "p99 2.1s > max 2s over 30s, 300 requests"},
		},
		{
			name:      "p99 at max does not fail",
			limits:    with(func(l *Limits) { l.MaxP99 = 2 * time.Second }),
			candidate: stats(300, 0, 2*time.Second),
			stable:    healthyStable,
			want:      Verdict{Enough: true},
		},
		{
			name:      "sub-millisecond p99 keeps microseconds",
			limits:    with(func(l *Limits) { l.MaxP99 = 300 * time.Microsecond }),
			candidate: stats(300, 0, 450*time.Microsecond+200),
			stable:    healthyStable,
			want: Verdict{Enough: true, Fail: true, Kind: "latency",
				Reason: "p99 450µs > max 300µs over 30s, 300 requests"},
		},
		{
			name:      "error rate is checked before latency",
			limits:    with(func(l *Limits) { l.MaxP99 = time.Second }),
			candidate: stats(100, 6, 3*time.Second),
			stable:    healthyStable,
			want: Verdict{Enough: true, Fail: true, Kind: "error-rate",
				Reason: "error rate 6.0% > 5% over 30s, 100 requests"},
		},
		{
			name:      "ratio is checked before max",
			limits:    with(func(l *Limits) { l.MaxP99Ratio = 2; l.MaxP99 = time.Second }),
			candidate: stats(100, 0, 3*time.Second),
			stable:    stats(100, 0, time.Second),
			want: Verdict{Enough: true, Fail: true, Kind: "latency",
				Reason: "p99 3s > 2 x stable p99 1s over 30s, 100 requests"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Judge(tt.limits, tt.candidate, tt.stable)
			if got != tt.want {
				t.Errorf("Judge(%+v, %+v, %+v)\n got %+v\nwant %+v", tt.limits, tt.candidate, tt.stable, got, tt.want)
			}
		})
	}
}

// TestJudgeWindow runs the judge on a Window's own Stats, as the rollback
// loop does: a canary failing 33 of 412 requests over 30s.
func TestJudgeWindow(t *testing.T) {
	canary, blue := NewWindow(30*time.Second), NewWindow(30*time.Second)
	for i := range 412 {
		now := at(float64(i%30) + 0.5)
		canary.Record(now, 20*time.Millisecond, i < 33)
		blue.Record(now, 20*time.Millisecond, false)
	}
	l := Limits{MaxErrorRate: 5, MinRequests: 20, Window: 30 * time.Second}
	got := Judge(l, canary.Stats(at(29.5), l.Window), blue.Stats(at(29.5), l.Window))
	want := Verdict{Enough: true, Fail: true, Kind: KindErrorRate,
		Reason: "error rate 8.0% > 5% over 30s, 412 requests"}
	if got != want {
		t.Errorf("Judge = %+v, want %+v", got, want)
	}
}

func TestFmtWindow(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{30 * time.Second, "30s"},
		{5 * time.Minute, "5m"},
		{90 * time.Second, "1m30s"},
		{time.Hour, "1h"},
		{time.Hour + time.Minute, "1h1m"},
		{1500 * time.Millisecond, "1.5s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := fmtWindow(tt.d); got != tt.want {
				t.Errorf("fmtWindow(%v) = %q, want %q", int64(tt.d), got, tt.want)
			}
		})
	}
}

func TestFmtRateShowsItIsAbove(t *testing.T) {
	for _, tt := range []struct {
		rate, limit float64
		want        string
	}{
		{8.1, 5, "8.1"}, {5.04, 5, "5.04"}, {5.06, 5, "5.1"}, {1.001, 1, "1.00"},
	} {
		if got := fmtRate(tt.rate, tt.limit); got != tt.want {
			t.Errorf("fmtRate(%v, %v) = %q, want %q", tt.rate, tt.limit, got, tt.want)
		}
	}
}
