package main

import (
	"context"
	"encoding/xml"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veer-proxy/veer/config"
)

func TestParseWrk(t *testing.T) {
	out := "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n" +
		"BENCH requests=20000 duration_us=2000000 bytes=123 connect=1 read=2 write=3 status=4 timeout=5 p50=1500 p99=9000 p999=12000 max=20000\n"
	w, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := w.rps(), 10000.0; got != want {
		t.Errorf("rps: got %v, want %v", got, want)
	}
	if got, want := w.socketErrors(), int64(11); got != want {
		t.Errorf("socket errors: got %d, want %d", got, want)
	}
	if w.Status != 4 || w.P50 != 1500 || w.P99 != 9000 || w.P999 != 12000 {
		t.Errorf("got %+v", w)
	}
	if _, err := parseWrk("no summary here\n"); err == nil {
		t.Error("parseWrk accepted output without a BENCH line")
	}
}

func TestMedianOf(t *testing.T) {
	runs := []runResult{
		{RPS: 30, P99: 3, Errors: 1, Blue: 90, Canary: 10},
		{RPS: 10, P99: 9, Blue: 90, Canary: 10},
		{RPS: 20, P99: 1, Non2xx: 2, Blue: 90, Canary: 10},
	}
	m := medianOf(runs)
	if m.RPS != 20 || m.P99 != 3 {
		t.Errorf("medians: got rps %v p99 %v, want 20 and 3", m.RPS, m.P99)
	}
	if m.Errors != 1 || m.Non2xx != 2 || m.Blue != 270 || m.Canary != 30 {
		t.Errorf("sums: got %+v", m)
	}
	if got := m.canaryShare(); math.Abs(got-10) > 1e-9 {
		t.Errorf("canary share: got %v, want 10", got)
	}
}

func testUpstream() *upstream { return &upstream{blue: 9001, canary: 9002} }

// TestVeerConfigValid checks the generated veer configs with veer's own
// config loader, so a change to the config contract breaks this test and
// not a benchmark run.
func TestVeerConfigValid(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			dir := t.TempDir()
			src := veerConfig(sc, dir, 8080, 9901, testUpstream())
			c, err := config.Parse(filepath.Join(dir, "veer.yaml"), []byte(src))
			if err != nil {
				t.Fatalf("veer rejects the bench config: %v\n%s", err, src)
			}
			if got, want := len(c.Routes), sc.routes(); got != want {
				t.Errorf("routes: got %d, want %d", got, want)
			}
		})
	}
}

// TestPeerConfigsValid runs nginx -t and haproxy -c on the generated
// configs when those are installed.
func TestPeerConfigsValid(t *testing.T) {
	nginx, errN := lookPath("nginx")
	haproxy, errH := lookPath("haproxy")
	if errN != nil && errH != nil {
		t.Skip("neither nginx nor haproxy is installed")
	}
	for _, name := range []string{"get64", "canary", "routes1k"} {
		sc := findScenario(name)
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if errN == nil {
				file := filepath.Join(dir, "nginx.conf")
				writeFile(t, file, nginxConfig(sc, dir, 18080, testUpstream(), 4096))
				if out, err := exec.Command(nginx, "-t", "-q", "-p", dir, "-c", file, "-e", filepath.Join(dir, "err.log")).CombinedOutput(); err != nil {
					t.Errorf("nginx -t: %v\n%s", err, out)
				}
			}
			if errH == nil {
				file := filepath.Join(dir, "haproxy.cfg")
				writeFile(t, file, haproxyConfig(sc, dir, 18080, testUpstream(), 1000))
				writeFile(t, filepath.Join(dir, "hosts.map"), haproxyMap(sc))
				if out, err := exec.Command(haproxy, "-c", "-q", "-f", file).CombinedOutput(); err != nil {
					t.Errorf("haproxy -c: %v\n%s", err, out)
				}
			}
		})
	}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReport(t *testing.T) {
	res := func(rps float64, canary int64) []runResult {
		return []runResult{{RPS: rps, P50: 1, P99: 2, P999: 3, CPUPer100k: 4, PeakRSS: 20 << 20, Requests: 1000, Blue: 1000 - canary, Canary: canary}}
	}
	sr := &scenarioResult{Scenario: findScenario("get64")}
	for _, p := range []struct {
		name   string
		rps    float64
		canary int64
	}{{"veer", 30000, 100}, {"nginx", 20000, 100}, {"haproxy", 25000, 300}} {
		runs := res(p.rps, p.canary)
		sr.Proxies = append(sr.Proxies, &proxyResult{Proxy: p.name, Runs: runs, Median: medianOf(runs)})
	}
	idle := &scenarioResult{Scenario: findScenario("idle10k"), Note: "10 connections"}
	for _, p := range proxyNames {
		runs := []runResult{{IdleConns: 10, BytesPerConn: 1000, PeakRSS: 1 << 20, Requests: 10, Blue: 9, Canary: 1}}
		idle.Proxies = append(idle.Proxies, &proxyResult{Proxy: p, Runs: runs, Median: medianOf(runs)})
	}
	r := &report{Date: time.Unix(0, 0).UTC(), Options: &options{rounds: 1, duration: time.Second, proxyCPU: "0", loadCPU: "1", upstreamEngine: "epoll"},
		Scenarios: []*scenarioResult{sr, idle}, Command: "go run ./bench"}

	md := r.markdown()
	for _, want := range []string{"| GET 64 conns | nginx | 20000 |", "| 1.50 |", "| 1.20 |", "haproxy: canary took 30.00%"} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if got := len(r.problems()); got != 1 {
		t.Errorf("problems: got %d (%v), want 1 (haproxy's split)", got, r.problems())
	}
	d := xml.NewDecoder(strings.NewReader(r.svg()))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("results.svg is not well-formed XML: %v", err)
		}
	}
}

// TestQuick runs the harness end to end for a few seconds: one scenario
// under load and the idle-connection one, every proxy once. It needs
// nginx, haproxy and wrk installed (or root, to install them) and is
// skipped otherwise and under -short.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, bin := range []string{"nginx", "haproxy", "wrk", "taskset"} {
		if _, err := lookPath(bin); err != nil && os.Getenv("VEER_BENCH_INSTALL") == "" {
			t.Skipf("%s is not installed (set VEER_BENCH_INSTALL=1 to let the harness install it as root)", bin)
		}
	}
	out := t.TempDir()
	o, err := parseFlags([]string{"-quick", "-scenarios", "get64,idle10k", "-duration", "1s", "-warmup", "1s", "-idle-conns", "200", "-out", out})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "the release build (cmd/veer-build") {
		t.Errorf("results.md does not say veer was the release build:\n%s", md)
	}
	for _, p := range proxyNames {
		if !strings.Contains(string(md), "| GET 64 conns | "+p+" |") {
			t.Errorf("results.md has no get64 row for %s:\n%s", p, md)
		}
	}
	// busy %: each proxy is alone on its CPU under wrk's load, so it used
	// some of it and at most all of it (clock ticks are 10 ms).
	if !strings.Contains(string(md), "| kernel % | busy % |") {
		t.Fatalf("results.md has no busy %% column:\n%s", md)
	}
	for _, line := range strings.Split(string(md), "\n") {
		if !strings.HasPrefix(line, "| GET 64 conns | ") {
			continue
		}
		f := strings.Split(line, "|")
		if !slices.Contains(proxyNames, strings.TrimSpace(f[2])) {
			continue // the ratio tables
		}
		busy, err := strconv.ParseFloat(strings.TrimSpace(f[9]), 64)
		if err != nil || busy <= 0 || busy > 110 {
			t.Errorf("busy %% in %q is %q, want a share of one CPU", line, f[9])
		}
		// Every request answered, and answered well: veer runs on one P
		// here, where its socket calls are batched (package sock).
		if rps, err := strconv.ParseFloat(strings.TrimSpace(f[3]), 64); err != nil || rps <= 0 {
			t.Errorf("req/s in %q is %q, want some", line, f[3])
		}
		if e, n := strings.TrimSpace(f[12]), strings.TrimSpace(f[13]); e != "0" || n != "0" {
			t.Errorf("%q: %s errors and %s non-2xx answers, want none", line, e, n)
		}
	}
}

func TestParsePerfCount(t *testing.T) {
	out := []byte("# started on Wed Nov 25 23:13:48 2026\n\n546659,,raw_syscalls:sys_enter,3470290,100.00,,\n9214,,sched:sched_waking,3470290,100.00,,\n")
	if n, err := parsePerfCount(out, syscallEvent); err != nil || n != 546659 {
		t.Errorf("system calls: got %d, %v; want 546659", n, err)
	}
	if n, err := parsePerfCount(out, wakeEvent); err != nil || n != 9214 {
		t.Errorf("wake-ups: got %d, %v; want 9214", n, err)
	}
	if _, err := parsePerfCount([]byte("<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n"), syscallEvent); err == nil {
		t.Error("an unsupported event was read as a count")
	}
	if _, err := parsePerfCount([]byte("# started\n"), syscallEvent); err == nil {
		t.Error("output without the event was read as a count")
	}
}

func TestBaseRevFlag(t *testing.T) {
	o, err := parseFlags([]string{"-base-rev", "HEAD~1", "-proxies", "veer,nginx"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.proxies, ","); got != "veer,veer-base,nginx" {
		t.Errorf("proxies %s, want veer,veer-base,nginx (the base takes its turn after veer)", got)
	}
	if got := commandLine(o); !strings.Contains(got, "-base-rev HEAD~1") || !strings.Contains(got, "-proxies veer,nginx") {
		t.Errorf("command line %q does not reproduce the run", got)
	}
	if _, err := parseFlags([]string{"-base-rev", "HEAD~1", "-proxies", "nginx"}); err == nil {
		t.Error("-base-rev without veer among the proxies was accepted")
	}
}

func TestStockFlags(t *testing.T) {
	o, err := parseFlags([]string{"-base-stock", "-proxies", "veer,haproxy"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.proxies, ","); got != "veer,veer-base,haproxy" {
		t.Errorf("proxies %s, want veer,veer-base,haproxy", got)
	}
	if got := commandLine(o); !strings.Contains(got, " -base-stock") || strings.Contains(got, " -stock") {
		t.Errorf("command line %q does not reproduce the run", got)
	}
	if o, err := parseFlags([]string{"-stock"}); err != nil || !o.stock || !strings.Contains(commandLine(o), " -stock") {
		t.Errorf("-stock: %+v, %v", o, err)
	}
	if o, err := parseFlags(nil); err != nil || o.stock || o.hasBase() || strings.Contains(commandLine(o), "stock") {
		t.Errorf("the default is the release build and no veer-base: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-base-stock", "-stock"},
		{"-base-stock", "-base-go", t.TempDir()},
		{"-base-stock", "-proxies", "nginx"},
	} {
		if _, err := parseFlags(args); err == nil || !strings.Contains(err.Error(), "-base-stock") {
			t.Errorf("%v: err = %v, want one naming -base-stock", args, err)
		}
	}
}

func TestBaseGoAndEngineFlags(t *testing.T) {
	goroot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(goroot, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goroot, "bin", "go"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"-base-go", goroot, "-upstream-engine", "fasthttp", "-proxies", "veer,haproxy"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.proxies, ","); got != "veer,veer-base,haproxy" {
		t.Errorf("proxies %s, want veer,veer-base,haproxy", got)
	}
	if got := commandLine(o); !strings.Contains(got, "-base-go "+goroot) || !strings.Contains(got, "-upstream-engine fasthttp") {
		t.Errorf("command line %q does not reproduce the run", got)
	}
	if o, err := parseFlags(nil); err != nil || o.upstreamEngine != "epoll" || strings.Contains(commandLine(o), "-upstream-engine") {
		t.Errorf("default engine: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-base-go", t.TempDir()},                 // no bin/go
		{"-base-go", goroot, "-proxies", "nginx"}, // nothing to compare with
		{"-upstream-engine", "netty"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%q was accepted", args)
		}
	}
}

func TestPairedRatio(t *testing.T) {
	rps := func(x *runResult) float64 { return x.RPS }
	run := func(round int, v float64) runResult { return runResult{Round: round, RPS: v} }
	tests := []struct {
		name     string
		a, b     []runResult
		want     string
		wantMore int
		wantN    int
	}{
		{"drift cancels", // the machine doubles its speed in round 2
			[]runResult{run(1, 110), run(2, 220), run(3, 105)},
			[]runResult{run(1, 100), run(2, 200), run(3, 100)},
			"1.10", 3, 3},
		{"even count takes the mean of the middle two",
			[]runResult{run(1, 100), run(2, 120)},
			[]runResult{run(1, 100), run(2, 100)},
			"1.10", 1, 2},
		{"unpaired rounds are left out",
			[]runResult{run(1, 90), run(2, 500)},
			[]runResult{run(1, 100)},
			"0.90", 0, 1},
		{"no pairs", []runResult{run(1, 1)}, []runResult{run(2, 1)}, "–", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more, n := pairedRatio(tt.a, tt.b, rps)
			if got != tt.want || more != tt.wantMore || n != tt.wantN {
				t.Errorf("pairedRatio = %s, %d, %d; want %s, %d, %d", got, more, n, tt.want, tt.wantMore, tt.wantN)
			}
		})
	}
}
