package health

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limits are the thresholds of SPEC.md's rollback block, and of a rollout's
// analysis step. A Limits is a plain value, safe to copy and share.
type Limits struct {
	MaxErrorRate         float64       // percent; a version fails when its error rate is strictly above it
	MinRequests          int           // no verdict below this many requests in the window (and never on none)
	Window               time.Duration // the stretch the Stats were taken over; named in reasons
	MaxErrorRateIncrease float64       // 0 = off; percentage points above stable's error rate
	MaxP99Ratio          float64       // 0 = off; fail when p99 > ratio * stable's p99 (only when stable has >= MinRequests requests and p99 > 0)
	MaxP99               time.Duration // 0 = off
}

// Verdict is Judge's answer about one version.
type Verdict struct {
	Enough bool   // at least MinRequests requests in the window
	Fail   bool   // a limit was crossed; only when Enough
	Kind   string // "error-rate" or "latency" when Fail, the reason label of veer_rollbacks_total
	Reason string // for the revision and the event, e.g. "error rate 8.1% > 5% over 30s, 412 requests"
}

// Verdict kinds.
const (
	KindErrorRate = "error-rate"
	KindLatency   = "latency"
)

// Judge decides whether candidate, a version other than stable, crossed one of
// l's limits, given both versions' Stats over l.Window. It checks the error
// rate first, then the increase over stable's, then p99 against stable's, then
// the p99 ceiling, and reports the first limit crossed. With fewer than
// l.MinRequests candidate requests (or none at all) there is no verdict:
// Enough and Fail are false. Judge is a pure function.
func Judge(l Limits, candidate, stable Stats) Verdict {
	minReq := uint64(max(l.MinRequests, 1))
	if candidate.Requests < minReq {
		return Verdict{}
	}
	v := Verdict{Enough: true}
	over := fmt.Sprintf("over %s, %d requests", fmtWindow(l.Window), candidate.Requests)
	fail := func(kind, format string, args ...any) Verdict {
		v.Fail, v.Kind = true, kind
		v.Reason = fmt.Sprintf(format, args...) + " " + over
		return v
	}
	switch {
	case candidate.ErrorRate > l.MaxErrorRate:
		return fail(KindErrorRate, "error rate %s%% > %s%%",
			fmtRate(candidate.ErrorRate, l.MaxErrorRate), fmtFloat(l.MaxErrorRate))
	case l.MaxErrorRateIncrease > 0 && candidate.ErrorRate > stable.ErrorRate+l.MaxErrorRateIncrease:
		return fail(KindErrorRate, "error rate %.1f%% > stable %.1f%% + %s points",
			candidate.ErrorRate, stable.ErrorRate, fmtFloat(l.MaxErrorRateIncrease))
	case l.MaxP99Ratio > 0 && stable.Requests >= minReq && stable.P99 > 0 &&
		float64(candidate.P99) > l.MaxP99Ratio*float64(stable.P99):
		return fail(KindLatency, "p99 %s > %s x stable p99 %s",
			fmtLatency(candidate.P99), fmtFloat(l.MaxP99Ratio), fmtLatency(stable.P99))
	case l.MaxP99 > 0 && candidate.P99 > l.MaxP99:
		return fail(KindLatency, "p99 %s > max %s",
			fmtLatency(candidate.P99), fmtWindow(l.MaxP99))
	}
	return v
}

// fmtRate writes a measured rate with one decimal, or two when one would
// not show that it is above limit ("5.04%" rather than "5.0% > 5%").
func fmtRate(rate, limit float64) string {
	if one := strconv.FormatFloat(rate, 'f', 1, 64); mustParse(one) > limit {
		return one
	}
	return strconv.FormatFloat(rate, 'f', 2, 64)
}

func mustParse(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// fmtFloat writes a configured limit as given: 5, 1.1, 0.5.
func fmtFloat(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// fmtLatency writes a measured latency to the millisecond (to the microsecond
// below 1ms): 812ms, 2.1s, 450µs.
func fmtLatency(d time.Duration) string {
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return fmtWindow(d.Round(time.Millisecond))
}

// fmtWindow writes a configured duration as it would be written in the
// config: 30s, 5m, 1h, 1m30s; not 5m0s.
func fmtWindow(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
