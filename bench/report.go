package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report is everything results.md and results.svg show.
type report struct {
	Machine   machine
	Date      time.Time
	Elapsed   time.Duration
	LoadStart string
	LoadEnd   string
	Options   *options
	Scenarios []*scenarioResult
	Command   string
}

func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.svg"), []byte(r.svg()), 0o644)
}

func printScenario(w io.Writer, sr *scenarioResult) {
	fmt.Fprintf(w, "== %s: %s\n", sr.Scenario.Name, sr.Scenario.Title)
	for _, p := range sr.Proxies {
		m := p.Median
		if sr.Scenario.Idle {
			fmt.Fprintf(w, "   %-8s %6d conns  %8.0f bytes/conn  peak %6.1f MiB  failed %d\n",
				p.Proxy, m.IdleConns, m.BytesPerConn, mib(m.PeakRSS), m.IdleFailed)
			continue
		}
		fmt.Fprintf(w, "   %-8s %9.0f req/s  p50 %7.2fms  p99 %7.2fms  p99.9 %7.2fms  %6.3f CPU s/100k (%2.0f%% kernel, busy %3.0f%%)  peak %6.1f MiB  canary %5.2f%%  errors %d  non-2xx %d  others' CPU %.0f%%\n",
			p.Proxy, m.RPS, m.P50, m.P99, m.P999, m.CPUPer100k, m.SysShare, m.Busy, mib(m.PeakRSS), m.canaryShare(), m.Errors, m.Non2xx, m.OtherCPU)
		if m.SyscallsPerReq > 0 {
			fmt.Fprintf(w, "   %-8s %9.2f system calls and %.3f wake-ups per request\n", p.Proxy, m.SyscallsPerReq, m.WakeupsPerReq)
		}
	}
}

// noisyCPU is how much of a CPU other processes may take during a run
// before results.md calls the run noisy.
const noisyCPU = 10.0

// noisyRuns lists the measured runs during which other processes used
// more than noisyCPU percent of a CPU.
func (r *report) noisyRuns() []string {
	var out []string
	for _, sr := range r.Scenarios {
		for _, p := range sr.Proxies {
			for _, run := range p.Runs {
				if run.OtherCPU > noisyCPU {
					out = append(out, fmt.Sprintf("%s/%s round %d: %.0f%%", sr.Scenario.Name, p.Proxy, run.Round, run.OtherCPU))
				}
			}
		}
	}
	return out
}

func (r *report) measuredRuns() int {
	n := 0
	for _, sr := range r.Scenarios {
		if sr.Scenario.Idle {
			continue
		}
		for _, p := range sr.Proxies {
			n += len(p.Runs)
		}
	}
	return n
}

// busy reports whether a /proc/loadavg triple starts above 1.
func busy(load string) bool {
	f := strings.Fields(load)
	if len(f) == 0 {
		return false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return err == nil && v > 1
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// pairedRatio is the median over rounds of metric(a)/metric(b) for the
// runs of a and b in the same round, formatted; the number of rounds in
// which a's metric was the larger; and the number of rounds compared.
func pairedRatio(a, b []runResult, metric func(*runResult) float64) (string, int, int) {
	var qs []float64
	more := 0
	for i := range a {
		for j := range b {
			if a[i].Round != b[j].Round {
				continue
			}
			x, y := metric(&a[i]), metric(&b[j])
			if x > 0 && y > 0 {
				qs = append(qs, x/y)
				if x > y {
					more++
				}
			}
		}
	}
	if len(qs) == 0 {
		return "–", 0, 0
	}
	return fmt.Sprintf("%.2f", median(qs)), more, len(qs)
}

// ratio is a/b formatted, or "–" when either is missing.
func ratio(a, b float64) string {
	if a <= 0 || b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// problems lists what makes the numbers untrustworthy: failed requests,
// a split that is not the configured one, requests the upstream never saw.
func (r *report) problems() []string {
	var out []string
	for _, sr := range r.Scenarios {
		sc := sr.Scenario
		for _, p := range sr.Proxies {
			m := p.Median
			where := sc.Name + "/" + p.Proxy
			if sc.Idle {
				if m.IdleFailed > 0 {
					out = append(out, fmt.Sprintf("%s: %d idle connections failed", where, m.IdleFailed))
				}
			} else {
				if m.Requests == 0 {
					out = append(out, where+": no request completed")
					continue
				}
				if m.Errors > 0 {
					out = append(out, fmt.Sprintf("%s: %d socket errors (connect/read/write/timeout)", where, m.Errors))
				}
				if m.Non2xx > 0 {
					out = append(out, fmt.Sprintf("%s: %d answers of 400 or more", where, m.Non2xx))
				}
				if seen := m.Blue + m.Canary; float64(seen) < 0.95*float64(m.Requests) {
					out = append(out, fmt.Sprintf("%s: the upstream counted %d requests, wrk %d", where, seen, m.Requests))
				}
			}
			if sc.UpstreamOnly {
				continue
			}
			// The configured split is 10%; a hash of 100,000 sticky keys
			// over a ring lands near it, weighted round robin on it.
			share, tol := m.canaryShare(), 1.5
			if sc.Sticky || sc.Idle {
				tol = 4
			}
			if math.Abs(share-weightCanary) > tol {
				out = append(out, fmt.Sprintf("%s: canary took %.2f%% of requests, configured %d%%", where, share, weightCanary))
			}
		}
	}
	return out
}

func (r *report) markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# veer beside nginx and HAProxy\n\n")
	fmt.Fprintf(&b, "Taken %s with `%s` (%s, %d round(s) of %s per proxy and scenario, medians shown).\n\n",
		r.Date.Format("2006-01-02 15:04 MST"), r.Command, r.Elapsed.Round(time.Second), r.Options.rounds, r.Options.duration)
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| machine | %d CPUs, %s, %s |\n", m.CPUs, m.CPU, m.Kernel)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s before the first run (the harness's own processes raise it during the runs) |\n", r.LoadStart)
	fmt.Fprintf(&b, "| veer | %s (%s), %s |\n", m.Veer, m.Go, m.Build)
	if m.Base != "" {
		fmt.Fprintf(&b, "| veer-base | %s, the same config, for before/after |\n", m.Base)
	}
	fmt.Fprintf(&b, "| nginx | %s |\n| HAProxy | %s |\n| load generator | wrk %s |\n\n", m.Nginx, m.HAProxy, strings.TrimPrefix(m.Wrk, "wrk "))
	fmt.Fprintf(&b, "Each proxy runs alone on CPU %s with one worker (veer `GOMAXPROCS=1`, nginx `worker_processes 1`, HAProxy `nbthread 1`); "+
		"wrk (one thread) and the upstream (bench/upstream, %s engine) share CPU %s. The proxies take turns, round after round. "+
		"Latencies are wrk's, in milliseconds; CPU is the proxy's user+system time per 100,000 requests, and kernel %% the share of it spent in the kernel (system calls, the TCP stack); "+
		"busy %% is the proxy's CPU time over wrk's measured time, in percent of its CPU: well below 100, the proxy waited for wrk and the upstream, and the req/s measured CPU %s more than the proxy; "+
		"peak RSS is VmHWM (nginx: master + worker); canary %% is the canary upstream's share of the requests it and blue counted (configured: %d%%). "+
		"The last column is veer's requests/s divided by that row's.\n\n", r.Options.proxyCPU, r.Options.upstreamEngine, r.Options.loadCPU, r.Options.loadCPU, weightCanary)

	if noisy := r.noisyRuns(); busy(r.LoadStart) || len(noisy) > 0 {
		fmt.Fprintf(&b, "**The machine was not quiet**: load average %s before the first run; %d of %d measured runs had other processes using more than %.0f%% of a CPU (the \"others' CPU\" column, median per row). "+
			"Other work shares the proxy's CPU or the load generator's, so these figures are noisy; compare them only with figures from the same run.\n\n",
			r.LoadStart, len(noisy), r.measuredRuns(), noisyCPU)
	}
	if probs := r.problems(); len(probs) > 0 {
		b.WriteString("**Problems in this run** (figures affected by these are not to be trusted):\n\n")
		for _, p := range probs {
			fmt.Fprintf(&b, "- %s\n", p)
		}
		b.WriteString("\n")
	}

	b.WriteString("## Throughput and latency\n\n")
	b.WriteString("| scenario | proxy | req/s | p50 | p99 | p99.9 | CPU s/100k | kernel % | busy % | peak RSS MiB | canary % | errors | non-2xx | others' CPU % | veer ÷ this |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sr := range r.Scenarios {
		if sr.Scenario.Idle {
			continue
		}
		veer := sr.get("veer")
		for _, p := range sr.Proxies {
			md := p.Median
			share := fmt.Sprintf("%.2f", md.canaryShare())
			if sr.Scenario.UpstreamOnly {
				share = "–"
			}
			vs := "–"
			if veer != nil && p.Proxy != "veer" {
				vs = ratio(veer.Median.RPS, md.RPS)
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %.2f | %.3f | %.0f | %.0f | %.1f | %s | %d | %d | %.0f | %s |\n",
				sr.Scenario.Title, p.Proxy, md.RPS, md.P50, md.P99, md.P999, md.CPUPer100k, md.SysShare, md.Busy, mib(md.PeakRSS), share, md.Errors, md.Non2xx, md.OtherCPU, vs)
		}
	}

	for _, sr := range r.Scenarios {
		if !sr.Scenario.Idle {
			continue
		}
		fmt.Fprintf(&b, "\n## Memory per idle keep-alive connection (%s)\n\n", sr.Note)
		b.WriteString("| proxy | connections open | failed | bytes per connection | peak RSS MiB | canary % | veer ÷ this |\n|---|--:|--:|--:|--:|--:|--:|\n")
		veer := sr.get("veer")
		for _, p := range sr.Proxies {
			md := p.Median
			vs := "–"
			if veer != nil && p.Proxy != "veer" {
				vs = ratio(veer.Median.BytesPerConn, md.BytesPerConn)
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %.1f | %.2f | %s |\n", p.Proxy, md.IdleConns, md.IdleFailed, md.BytesPerConn, mib(md.PeakRSS), md.canaryShare(), vs)
		}
	}

	counted := false
	for _, sr := range r.Scenarios {
		for _, p := range sr.Proxies {
			counted = counted || p.Median.SyscallsPerReq > 0
		}
	}
	if counted {
		b.WriteString("\n## System calls and wake-ups per request\n\nCounted with `perf stat -e raw_syscalls:sys_enter,sched:sched_waking` on the proxy's processes during each measured run (`-syscalls`), divided by the requests wrk completed; medians. A wake-up is a task the proxy woke, mostly wrk or the upstream asleep in epoll_wait on the other CPU when the proxy's write reached it: on a virtual machine the dearest thing a write can do.\n\n")
		b.WriteString("| scenario | proxy | system calls per request | wake-ups per request |\n|---|---|--:|--:|\n")
		for _, sr := range r.Scenarios {
			for _, p := range sr.Proxies {
				if m := p.Median; m.SyscallsPerReq > 0 {
					fmt.Fprintf(&b, "| %s | %s | %.2f | %.3f |\n", sr.Scenario.Title, p.Proxy, m.SyscallsPerReq, m.WakeupsPerReq)
				}
			}
		}
	}

	b.WriteString("\n## veer ÷ peer\n\nAbove 1 is better for veer in req/s; below 1 is better for veer in p99, CPU and memory.\n\n")
	b.WriteString("| scenario | req/s ÷ nginx | req/s ÷ HAProxy | p99 ÷ nginx | p99 ÷ HAProxy | CPU ÷ nginx | CPU ÷ HAProxy | peak RSS ÷ nginx | peak RSS ÷ HAProxy |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sr := range r.Scenarios {
		veer := sr.get("veer")
		if veer == nil || sr.Scenario.UpstreamOnly {
			continue
		}
		v := veer.Median
		cells := []string{sr.Scenario.Title}
		for _, metric := range []func(*runResult) float64{
			func(x *runResult) float64 { return x.RPS },
			func(x *runResult) float64 { return x.P99 },
			func(x *runResult) float64 { return x.CPUPer100k },
			func(x *runResult) float64 { return float64(x.PeakRSS) },
		} {
			for _, peer := range []string{"nginx", "haproxy"} {
				p := sr.get(peer)
				if p == nil {
					cells = append(cells, "–")
					continue
				}
				cells = append(cells, ratio(metric(&v), metric(&p.Median)))
			}
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}

	b.WriteString("\n## veer ÷ peer, round by round\n\n" +
		"The same ratios taken within each round (veer's run against the peer's run of the same round, minutes apart at most) and then the median over the rounds: " +
		"this machine's speed drifts by tens of percent over minutes, which moves whole rounds and cancels out of these ratios, not out of the ones above.\n\n")
	b.WriteString("| scenario | rounds | req/s ÷ nginx | req/s ÷ HAProxy | CPU ÷ nginx | CPU ÷ HAProxy | rounds veer had more req/s than nginx | than HAProxy |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sr := range r.Scenarios {
		veer := sr.get("veer")
		if veer == nil || sr.Scenario.UpstreamOnly || sr.Scenario.Idle {
			continue
		}
		cells := []string{sr.Scenario.Title, strconv.Itoa(len(veer.Runs))}
		var wins []string
		for i, metric := range []func(*runResult) float64{
			func(x *runResult) float64 { return x.RPS },
			func(x *runResult) float64 { return x.CPUPer100k },
		} {
			for _, peer := range []string{"nginx", "haproxy"} {
				p := sr.get(peer)
				if p == nil {
					cells = append(cells, "–")
					if i == 0 {
						wins = append(wins, "–")
					}
					continue
				}
				q, more, n := pairedRatio(veer.Runs, p.Runs, metric)
				cells = append(cells, q)
				if i == 0 {
					wins = append(wins, fmt.Sprintf("%d of %d", more, n))
				}
			}
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(append(cells, wins...), " | "))
	}

	b.WriteString("\n## Scenarios\n\n")
	for _, sr := range r.Scenarios {
		fmt.Fprintf(&b, "- **%s** (`%s`): %s\n", sr.Scenario.Title, sr.Scenario.Name, sr.Scenario.What)
	}
	b.WriteString("\nEvery run's wrk output is in `raw/` beside this file (not committed).\n\n![chart](results.svg)\n")
	return b.String()
}

var barColors = map[string]string{"veer": "#1b9e77", baseName: "#66c2a5", "nginx": "#d95f02", "haproxy": "#7570b3", "upstream": "#999999"}

// svg draws one group of horizontal bars per scenario, each bar scaled to
// the largest in its group: requests/s, or bytes per idle connection.
func (r *report) svg() string {
	const (
		width  = 960
		left   = 210
		right  = 150
		barH   = 16
		gap    = 4
		groupG = 18
		top    = 64
	)
	height := top + 20
	for _, sr := range r.Scenarios {
		height += len(sr.Proxies)*(barH+gap) + groupG + 14
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="12" y="22" font-size="16" font-weight="bold">veer, nginx and HAProxy on one core: requests/s (longer is better)</text>`+"\n")
	fmt.Fprintf(&b, `<text x="12" y="42" fill="#555">%s · %d CPUs %s · %s · %s</text>`+"\n",
		html.EscapeString(r.Date.Format("2006-01-02")), r.Machine.CPUs, html.EscapeString(r.Machine.CPU),
		html.EscapeString("veer "+r.Machine.Veer+", nginx "+r.Machine.Nginx+", HAProxy "+r.Machine.HAProxy),
		html.EscapeString(r.Command))
	y := top
	for _, sr := range r.Scenarios {
		title := sr.Scenario.Title
		val := func(m *runResult) float64 { return m.RPS }
		unit := func(v float64) string { return fmt.Sprintf("%.0f req/s", v) }
		if sr.Scenario.Idle {
			title += " (bytes per connection, shorter is better)"
			val = func(m *runResult) float64 { return m.BytesPerConn }
			unit = func(v float64) string { return fmt.Sprintf("%.0f B/conn", v) }
		}
		fmt.Fprintf(&b, `<text x="12" y="%d" font-weight="bold">%s</text>`+"\n", y+10, html.EscapeString(title))
		y += 14
		top := 0.0
		for _, p := range sr.Proxies {
			top = math.Max(top, val(&p.Median))
		}
		for _, p := range sr.Proxies {
			v := val(&p.Median)
			w := 0.0
			if top > 0 && v > 0 {
				w = float64(width-left-right) * v / top
			}
			color := barColors[p.Proxy]
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH-4, html.EscapeString(p.Proxy))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, color)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#333">%s</text>`+"\n", float64(left)+w+6, y+barH-4, html.EscapeString(unit(v)))
			y += barH + gap
		}
		y += groupG
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// median is the middle of v (the mean of the two middle values for an
// even count). It sorts v.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
