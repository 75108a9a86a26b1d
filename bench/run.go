package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// runResult is one proxy's figures from one run.
type runResult struct {
	Round      int
	RPS        float64
	P50        float64 // milliseconds
	P99        float64
	P999       float64
	CPUPer100k float64 // proxy CPU seconds (user+system) per 100,000 requests
	SysShare   float64 // percent of that CPU time spent in the kernel
	// Busy is the proxy's CPU time over wrk's measured time, in
	// percent of one CPU: well below 100 the proxy was waiting for wrk
	// and the upstream, and req/s measured their CPU more than the proxy.
	Busy float64
	// SyscallsPerReq is the proxy's system calls per request (-syscalls;
	// 0 when not counted).
	SyscallsPerReq float64
	// WakeupsPerReq is how many tasks the proxy woke per request (with
	// -syscalls): wrk and the upstream, when its write found them asleep.
	WakeupsPerReq float64
	PeakRSS       int64 // bytes: VmHWM, summed over the proxy's processes
	Requests      int64
	Errors        int64 // wrk socket errors: connect, read, write, timeout
	Non2xx        int64 // answers with status 400 or more
	Blue          int64 // requests the blue and canary upstreams counted
	Canary        int64
	// OtherCPU is how much CPU processes other than the proxy, wrk, the
	// upstream and the harness used during the run, in percent of one CPU:
	// the noise from a machine that was not quiet.
	OtherCPU float64
	// Idle-connection scenario only.
	IdleConns    int
	IdleFailed   int
	BytesPerConn float64
}

// proxyResult is one proxy's runs in one scenario and their medians.
type proxyResult struct {
	Proxy  string
	Runs   []runResult
	Median runResult // per field; Errors, Non2xx, Blue, Canary are sums
}

// scenarioResult is one scenario's results, in proxyNames order.
type scenarioResult struct {
	Scenario *scenario
	Proxies  []*proxyResult
	Note     string
}

func (sr *scenarioResult) get(proxy string) *proxyResult {
	for _, p := range sr.Proxies {
		if p.Proxy == proxy {
			return p
		}
	}
	return nil
}

// runScenario runs sc for every proxy in turn, -rounds times over.
func runScenario(ctx context.Context, e *env, sc *scenario) (*scenarioResult, error) {
	sr := &scenarioResult{Scenario: sc}
	names := e.o.proxies
	if sc.UpstreamOnly {
		names = []string{"upstream"}
	}
	byName := map[string]*proxyResult{}
	for _, n := range names {
		p := &proxyResult{Proxy: n}
		byName[n] = p
		sr.Proxies = append(sr.Proxies, p)
	}
	if sc.Idle {
		sr.Note = fmt.Sprintf("%d connections", e.o.idleConns)
		if limit := e.idleLimit(); e.o.idleConns > limit {
			sr.Note = fmt.Sprintf("%d connections, not the %d asked for: the file limit here (%d, which the harness cannot raise) lets HAProxy hold no more",
				limit, e.o.idleConns, e.nofile)
			e.log("%s", sr.Note)
		}
	}
	for round := 1; round <= e.o.rounds; round++ {
		// Each round starts with the next proxy, so that none always runs
		// first (after the last scenario's load) or last.
		order := append(slices.Clone(names[(round-1)%len(names):]), names[:(round-1)%len(names)]...)
		for _, n := range order {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			e.log("%s round %d/%d: %s", sc.Name, round, e.o.rounds, n)
			var r *runResult
			for attempt := 0; ; attempt++ {
				var try *runResult
				var err error
				switch {
				case sc.UpstreamOnly:
					try, err = runUpstreamOnly(ctx, e, sc, round)
				default:
					try, err = runProxy(ctx, e, sc, n, round)
				}
				if err != nil {
					return nil, fmt.Errorf("%s round %d: %w", n, round, err)
				}
				if r == nil || try.OtherCPU < r.OtherCPU {
					r = try
				}
				if sc.Idle || e.o.maxOther <= 0 || r.OtherCPU <= e.o.maxOther || attempt >= e.o.redo {
					break
				}
				e.log("  others used %.0f%% of a CPU during that run (over -max-other-cpu %.0f%%): once more", try.OtherCPU, e.o.maxOther)
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(3 * time.Second):
				}
			}
			r.Round = round
			byName[n].Runs = append(byName[n].Runs, *r)
		}
	}
	for _, p := range sr.Proxies {
		p.Median = medianOf(p.Runs)
	}
	return sr, nil
}

func runUpstreamOnly(ctx context.Context, e *env, sc *scenario, round int) (*runResult, error) {
	pids := []int{e.up.pid()}
	if _, err := runWrk(ctx, e, sc, e.up.blue, e.o.warmup, ""); err != nil {
		return nil, err
	}
	return measure(ctx, e, sc, "upstream", e.up.blue, pids, round)
}

func runProxy(ctx context.Context, e *env, sc *scenario, name string, round int) (*runResult, error) {
	dir := filepath.Join(e.tmp, fmt.Sprintf("%s-%s-%d", sc.Name, name, round))
	profile := ""
	if e.o.profile && name == "veer" {
		profile = filepath.Join(e.raw, fmt.Sprintf("profile-%s-r%d", sc.Name, round))
	}
	in, err := startProxy(ctx, e, name, sc, dir, profile)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	if sc.Idle {
		return idleRun(ctx, e, sc, in)
	}
	if _, err := runWrk(ctx, e, sc, in.port, e.o.warmup, ""); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	return measure(ctx, e, sc, name, in.port, in.pids(), round)
}

// measure runs the measured wrk and reads the processes' CPU time, peak
// memory and the upstream's counts around it.
func measure(ctx context.Context, e *env, sc *scenario, name string, port int, pids []int, round int) (*runResult, error) {
	ours := pids
	if name != "upstream" {
		ours = append([]int{e.up.pid()}, pids...)
	}
	ours = append(ours, os.Getpid())
	cpu0, sys0, err := sumUserSys(pids)
	if err != nil {
		return nil, err
	}
	ours0, err := sumTicks(ours)
	if err != nil {
		return nil, err
	}
	busy0, err := busyTicks()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	b0, c0, err := e.up.counts()
	if err != nil {
		return nil, err
	}
	raw := filepath.Join(e.raw, fmt.Sprintf("wrk-%s-%s-r%d.txt", sc.Name, name, round))
	var counter *syscallCounter
	if e.o.syscalls {
		out := filepath.Join(e.raw, fmt.Sprintf("syscalls-%s-%s-r%d.txt", sc.Name, name, round))
		if counter, err = countSyscalls(e.perf, pids, out); err != nil {
			return nil, err
		}
	}
	w, err := runWrk(ctx, e, sc, port, e.o.duration, raw)
	var calls, wakes int64
	if counter != nil {
		var cerr error
		if calls, wakes, cerr = counter.stop(); cerr != nil && err == nil {
			err = cerr
		}
	}
	if err != nil {
		return nil, err
	}
	busy1, err := busyTicks()
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	cpu1, sys1, err := sumUserSys(pids)
	if err != nil {
		return nil, err
	}
	ours1, err := sumTicks(ours)
	if err != nil {
		return nil, err
	}
	b1, c1, err := e.up.counts()
	if err != nil {
		return nil, err
	}
	var hwm int64
	for _, pid := range pids {
		v, err := statusKB(pid, "VmHWM")
		if err != nil {
			return nil, err
		}
		hwm += v
	}
	r := &runResult{
		RPS:      w.rps(),
		P50:      w.P50 / 1000,
		P99:      w.P99 / 1000,
		P999:     w.P999 / 1000,
		PeakRSS:  hwm,
		Requests: w.Requests,
		Errors:   w.socketErrors(),
		Non2xx:   w.Status,
		Blue:     b1 - b0,
		Canary:   c1 - c0,
	}
	other := float64(busy1-busy0-(ours1-ours0))/e.clkTck - w.CPU.Seconds()
	r.OtherCPU = max(0, 100*other/elapsed.Seconds())
	if w.Requests > 0 {
		r.CPUPer100k = float64(cpu1-cpu0) / e.clkTck / float64(w.Requests) * 1e5
	}
	if calls > 0 && w.Requests > 0 {
		r.SyscallsPerReq = float64(calls) / float64(w.Requests)
		r.WakeupsPerReq = float64(wakes) / float64(w.Requests)
	}
	if cpu1 > cpu0 {
		r.SysShare = 100 * float64(sys1-sys0) / float64(cpu1-cpu0)
	}
	if w.DurationUS > 0 {
		// Over wrk's measured time: the proxy idles before wrk starts.
		r.Busy = 100 * float64(cpu1-cpu0) / e.clkTck / (float64(w.DurationUS) / 1e6)
	}
	e.log("  %.0f req/s, p50 %.2fms p99 %.2fms p99.9 %.2fms, %.3f CPU s/100k (%.0f%% in the kernel, busy %.0f%% of the run), peak %.1f MiB, errors %d, non-2xx %d, blue/canary %d/%d, others used %.0f%% of a CPU",
		r.RPS, r.P50, r.P99, r.P999, r.CPUPer100k, r.SysShare, r.Busy, float64(r.PeakRSS)/(1<<20), r.Errors, r.Non2xx, r.Blue, r.Canary, r.OtherCPU)
	if r.SyscallsPerReq > 0 {
		e.log("  %.2f system calls and %.3f wake-ups per request", r.SyscallsPerReq, r.WakeupsPerReq)
	}
	return r, nil
}

// sumUserSys is the user+system and the system clock ticks of pids.
func sumUserSys(pids []int) (total, sys int64, err error) {
	for _, pid := range pids {
		u, s, err := userSysTicks(pid)
		if err != nil {
			return 0, 0, err
		}
		total += u + s
		sys += s
	}
	return total, sys, nil
}

func sumTicks(pids []int) (int64, error) {
	var t int64
	for _, pid := range pids {
		v, err := cpuTicks(pid)
		if err != nil {
			return 0, err
		}
		t += v
	}
	return t, nil
}

// medianOf takes each figure's median over the runs (the upper median for
// an even count); counts of errors and of the split are summed.
func medianOf(runs []runResult) runResult {
	if len(runs) == 0 {
		return runResult{}
	}
	med := func(get func(r *runResult) float64) float64 {
		v := make([]float64, len(runs))
		for i := range runs {
			v[i] = get(&runs[i])
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	m := runResult{
		RPS:            med(func(r *runResult) float64 { return r.RPS }),
		P50:            med(func(r *runResult) float64 { return r.P50 }),
		P99:            med(func(r *runResult) float64 { return r.P99 }),
		P999:           med(func(r *runResult) float64 { return r.P999 }),
		CPUPer100k:     med(func(r *runResult) float64 { return r.CPUPer100k }),
		SysShare:       med(func(r *runResult) float64 { return r.SysShare }),
		Busy:           med(func(r *runResult) float64 { return r.Busy }),
		SyscallsPerReq: med(func(r *runResult) float64 { return r.SyscallsPerReq }),
		WakeupsPerReq:  med(func(r *runResult) float64 { return r.WakeupsPerReq }),
		PeakRSS:        int64(med(func(r *runResult) float64 { return float64(r.PeakRSS) })),
		BytesPerConn:   med(func(r *runResult) float64 { return r.BytesPerConn }),
		IdleConns:      int(med(func(r *runResult) float64 { return float64(r.IdleConns) })),
		OtherCPU:       med(func(r *runResult) float64 { return r.OtherCPU }),
	}
	for _, r := range runs {
		m.Requests += r.Requests
		m.Errors += r.Errors
		m.Non2xx += r.Non2xx
		m.Blue += r.Blue
		m.Canary += r.Canary
		m.IdleFailed += r.IdleFailed
	}
	return m
}

// canaryShare is the canary's percentage of what the upstream counted.
func (r *runResult) canaryShare() float64 {
	if r.Blue+r.Canary == 0 {
		return 0
	}
	return 100 * float64(r.Canary) / float64(r.Blue+r.Canary)
}
