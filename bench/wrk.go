package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// doneLua prints wrk's own summary in one machine-readable line, with the
// p99.9 that `wrk --latency` does not print. Latencies are microseconds.
const doneLua = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p99=%d p999=%d max=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
`

// wrkResult is one wrk run's summary.
type wrkResult struct {
	Requests   int64
	DurationUS int64
	Bytes      int64
	Connect    int64
	Read       int64
	Write      int64
	Status     int64 // answers with a status of 400 or more
	Timeout    int64
	P50        float64 // microseconds
	P99        float64
	P999       float64
	Max        float64
	CPU        time.Duration // wrk's own user+system time
}

func (w *wrkResult) rps() float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

// socketErrors are the failed connects, reads, writes and timeouts.
func (w *wrkResult) socketErrors() int64 { return w.Connect + w.Read + w.Write + w.Timeout }

// runWrk runs wrk for d against port with sc's workload, pinned to the
// load CPU, saving its output to rawFile when that is not "".
func runWrk(ctx context.Context, e *env, sc *scenario, port int, d time.Duration, rawFile string) (*wrkResult, error) {
	script := filepath.Join(e.tmp, "wrk-"+sc.Name+".lua")
	if _, err := os.Stat(script); err != nil {
		if err := os.WriteFile(script, []byte(sc.Lua+doneLua), 0o644); err != nil {
			return nil, err
		}
	}
	secs := int((d + time.Second - 1) / time.Second)
	args := []string{"-c", e.o.loadCPU, e.wrk, "-t1", fmt.Sprintf("-c%d", sc.Conns), fmt.Sprintf("-d%ds", secs),
		"--latency", "--timeout", "5s", "-s", script, "-H", "Host: " + sc.host()}
	for _, h := range sc.Heads {
		args = append(args, "-H", h)
	}
	args = append(args, fmt.Sprintf("http://127.0.0.1:%d%s", port, sc.Path))
	wctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(wctx, "taskset", args...) // taskset execs wrk: same process
	out, err := cmd.CombinedOutput()
	if rawFile != "" {
		_ = os.WriteFile(rawFile, append([]byte("taskset "+strings.Join(args, " ")+"\n\n"), out...), 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	w, err := parseWrk(string(out))
	if err != nil {
		return nil, err
	}
	w.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return w, nil
}

// parseWrk finds doneLua's BENCH line in wrk's output.
func parseWrk(out string) (*wrkResult, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "BENCH ") {
			continue
		}
		w := &wrkResult{}
		ints := map[string]*int64{"requests": &w.Requests, "duration_us": &w.DurationUS, "bytes": &w.Bytes,
			"connect": &w.Connect, "read": &w.Read, "write": &w.Write, "status": &w.Status, "timeout": &w.Timeout}
		floats := map[string]*float64{"p50": &w.P50, "p99": &w.P99, "p999": &w.P999, "max": &w.Max}
		for _, kv := range strings.Fields(line)[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("wrk: bad field %q", kv)
			}
			if p := ints[k]; p != nil {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("wrk: %s=%q: %w", k, v, err)
				}
				*p = n
			} else if p := floats[k]; p != nil {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return nil, fmt.Errorf("wrk: %s=%q: %w", k, v, err)
				}
				*p = f
			}
		}
		return w, nil
	}
	return nil, fmt.Errorf("wrk printed no summary line:\n%s", out)
}
