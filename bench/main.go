// Command bench runs veer, nginx and HAProxy side by side on one machine
// and writes the comparison to bench/results/ (results.md, results.svg).
//
// Each proxy is pinned to CPU 0 with one worker (GOMAXPROCS=1,
// worker_processes 1, nbthread 1); wrk and the harness's own upstream run
// on CPU 1. The proxies take turns (veer nginx haproxy veer nginx haproxy
// ...) for -rounds rounds per scenario and the medians are reported.
// bench/README.md explains the scenarios and the table.
//
//	go run ./bench                       # every scenario, 3 rounds of 10s
//	go run ./bench -quick                # a smoke run of a few seconds each
//	go run ./bench -scenarios get64,routes1k -rounds 5 -duration 20s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/veer-proxy/veer/internal/gobuild"
)

// options are the command line.
type options struct {
	rounds    int
	duration  time.Duration
	warmup    time.Duration
	scenarios []string
	proxies   []string
	quick     bool
	idleConns int
	out       string
	profile   bool
	syscalls  bool
	keep      bool
	proxyCPU  string
	loadCPU   string
	veerSrc   string
	veerRev   string
	baseRev   string
	maxOther  float64
	// upstreamEngine is bench/upstream's -engine: epoll or fasthttp.
	upstreamEngine string
	// baseGo is a GOROOT whose bin/go builds veer-base (-base-go).
	baseGo string
	redo   int
	// stock builds veer with Go's runtime as it is, not the release
	// build's (-stock); baseStock runs that build beside the release one
	// as veer-base (-base-stock).
	stock, baseStock bool
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := &options{}
	var scen, prox string
	fs.IntVar(&o.rounds, "rounds", 5, "rounds per scenario; each round runs every proxy once, in turn")
	fs.DurationVar(&o.duration, "duration", 6*time.Second, "measured length of each run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each run")
	fs.StringVar(&scen, "scenarios", "", "comma-separated scenarios to run (default all): "+strings.Join(scenarioNames(), ","))
	fs.StringVar(&prox, "proxies", "veer,nginx,haproxy", "comma-separated proxies to run")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: 1 round of 2s per scenario, 1,000 idle connections, results to bench/results/raw/quick")
	fs.IntVar(&o.idleConns, "idle-conns", 10000, "connections for the idle-connection memory scenario")
	fs.StringVar(&o.out, "out", "", "results `DIR` (default bench/results, or bench/results/raw/quick with -quick)")
	fs.BoolVar(&o.profile, "profile", false, "run veer under bench/veerprof and keep a CPU and allocation profile per scenario in results/raw/")
	fs.BoolVar(&o.syscalls, "syscalls", false, "count each proxy's system calls and wake-ups of other tasks per request (perf stat -e raw_syscalls:sys_enter,sched:sched_waking; needs perf, installed from linux-perf as root)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory with configs and logs")
	fs.StringVar(&o.proxyCPU, "proxy-cpu", "0", "CPU list (taskset -c) for the proxy under test")
	fs.StringVar(&o.loadCPU, "load-cpu", "1", "CPU list (taskset -c) for wrk, the upstream and the harness")
	fs.Float64Var(&o.maxOther, "max-other-cpu", 15, "redo a run when other processes used more than this `PERCENT` of a CPU during it (0: never)")
	fs.IntVar(&o.redo, "redo", 2, "at most this many redos per run for -max-other-cpu; the least disturbed attempt is kept")
	fs.StringVar(&o.veerSrc, "veer-src", "", "build veer from this checkout `DIR` instead of this one (before/after comparisons)")
	fs.StringVar(&o.veerRev, "veer-rev", "", "build veer from this git `REVISION` of this repository (git archive), not the working tree")
	fs.StringVar(&o.baseGo, "base-go", "", "also run veer built with the Go toolchain in `GOROOT` (its bin/go), as veer-base, from -base-rev or else from veer's own source: a toolchain before/after")
	fs.BoolVar(&o.stock, "stock", false, "build veer with plain go build, Go's runtime as it is, instead of the release build (cmd/veer-build: netpoll in readiness order)")
	fs.BoolVar(&o.baseStock, "base-stock", false, "also run veer's own source built with plain go build (Go's runtime as it is) as veer-base: the release build's runtime change before/after")
	fs.StringVar(&o.upstreamEngine, "upstream-engine", "epoll", "`ENGINE` of the harness's upstream: epoll (its own event loop, the cheapest) or fasthttp")
	fs.StringVar(&o.baseRev, "base-rev", "", "also run veer built from this git `REVISION`, as the proxy veer-base taking its turn after veer: a before/after in one run")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./bench [flags]\n\nRuns veer, nginx and HAProxy side by side; see bench/README.md.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["duration"] {
			o.duration = 2 * time.Second
		}
		if !set["warmup"] {
			o.warmup = 500 * time.Millisecond
		}
		if !set["idle-conns"] {
			o.idleConns = 1000
		}
		if !set["redo"] {
			o.redo = 0
		}
	}
	if o.upstreamEngine != "epoll" && o.upstreamEngine != "fasthttp" {
		return nil, fmt.Errorf("-upstream-engine %q: want epoll or fasthttp", o.upstreamEngine)
	}
	if o.veerSrc != "" && o.veerRev != "" {
		return nil, errors.New("-veer-src and -veer-rev exclude each other")
	}
	if o.rounds < 1 || o.duration < time.Second || o.idleConns < 1 {
		return nil, errors.New("-rounds must be at least 1, -duration at least 1s, -idle-conns at least 1")
	}
	if scen == "" {
		o.scenarios = scenarioNames()
	} else {
		for _, s := range strings.Split(scen, ",") {
			s = strings.TrimSpace(s)
			if findScenario(s) == nil {
				return nil, fmt.Errorf("unknown scenario %q; have %s", s, strings.Join(scenarioNames(), ","))
			}
			o.scenarios = append(o.scenarios, s)
		}
	}
	for _, p := range strings.Split(prox, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(proxyNames, p) {
			return nil, fmt.Errorf("unknown proxy %q; have %s", p, strings.Join(proxyNames, ","))
		}
		o.proxies = append(o.proxies, p)
		if p == "veer" && o.hasBase() {
			o.proxies = append(o.proxies, baseName)
		}
	}
	if o.hasBase() && !slices.Contains(o.proxies, baseName) {
		return nil, errors.New("-base-rev, -base-go and -base-stock compare with veer: -proxies must include veer")
	}
	if o.baseStock && (o.stock || o.baseGo != "") {
		return nil, errors.New("-base-stock compares the release build with a stock one: not with -stock or -base-go")
	}
	if o.baseGo != "" {
		// Absolute: veer-base is built in another directory.
		abs, err := filepath.Abs(o.baseGo)
		if err != nil {
			return nil, fmt.Errorf("-base-go %s: %v", o.baseGo, err)
		}
		o.baseGo = abs
		if _, err := os.Stat(filepath.Join(o.baseGo, "bin", "go")); err != nil {
			return nil, fmt.Errorf("-base-go %s: no bin/go there: %v", o.baseGo, err)
		}
	}
	return o, nil
}

// hasBase reports whether a veer-base runs beside veer.
func (o *options) hasBase() bool { return o.baseRev != "" || o.baseGo != "" || o.baseStock }

// env is what every run shares: tool paths, built binaries, the upstream.
type env struct {
	o        *options
	root     string // the repository
	tmp      string // configs, logs, binaries
	raw      string // results/raw: wrk output, profiles
	veer     string
	veerprof string
	nginx    string
	haproxy  string
	wrk      string
	perf     string // with -syscalls
	veerBase string // with -base-rev, -base-go or -base-stock
	overlay  string // go build -overlay of the release build ("" with -stock)
	up       *upstream
	machine  machine
	clkTck   float64
	nofile   uint64 // the file limit children get
	log      func(format string, args ...any)
}

func run(ctx context.Context, o *options) error {
	start := time.Now()
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(root, "bench", "results")
		if o.quick {
			o.out = filepath.Join(root, "bench", "results", "raw", "quick")
		}
	}
	e := &env{o: o, root: root, log: func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}}
	if runtime.GOOS != "linux" {
		return errors.New("the harness needs Linux (/proc, taskset)")
	}
	if err := e.findTools(); err != nil {
		return err
	}
	e.nofile = raiseFileLimit()
	e.clkTck = clockTicks()
	// The harness itself dials the idle connections and reads /proc: keep it
	// off the proxy's CPU.
	if err := exec.Command("taskset", "-a", "-p", "-c", o.loadCPU, fmt.Sprint(os.Getpid())).Run(); err != nil {
		return fmt.Errorf("pinning the harness to CPU %s: %w", o.loadCPU, err)
	}
	e.tmp, err = os.MkdirTemp("", "veer-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		e.log("keeping %s", e.tmp)
	} else {
		defer os.RemoveAll(e.tmp)
	}
	e.raw = filepath.Join(o.out, "raw")
	if o.quick {
		e.raw = filepath.Join(o.out, "wrk")
	}
	if err := os.MkdirAll(e.raw, 0o755); err != nil {
		return err
	}
	if err := e.build(ctx); err != nil {
		return err
	}
	e.machine = describeMachine(ctx, e)
	load := loadAverage()
	e.log("load average before the runs: %s (the numbers are noisy when it is above 1)", load)

	e.up, err = startUpstream(ctx, e)
	if err != nil {
		return err
	}
	defer e.up.stop()

	var all []*scenarioResult
	for _, name := range o.scenarios {
		if err := ctx.Err(); err != nil {
			return err
		}
		sc := findScenario(name)
		sr, err := runScenario(ctx, e, sc)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", name, err)
		}
		all = append(all, sr)
		printScenario(os.Stderr, sr)
	}
	rep := &report{
		Machine:   e.machine,
		Date:      start.UTC(),
		Elapsed:   time.Since(start),
		LoadStart: load,
		LoadEnd:   loadAverage(),
		Options:   o,
		Scenarios: all,
		Command:   commandLine(o),
	}
	if err := rep.write(o.out); err != nil {
		return err
	}
	e.log("wrote %s and %s", filepath.Join(o.out, "results.md"), filepath.Join(o.out, "results.svg"))
	if bad := rep.problems(); len(bad) > 0 {
		return fmt.Errorf("%d problems (also in results.md):\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
	return nil
}

func commandLine(o *options) string {
	s := "go run ./bench"
	if o.quick {
		s += " -quick"
	} else {
		s += fmt.Sprintf(" -rounds %d -duration %s", o.rounds, o.duration)
		if o.warmup != 2*time.Second {
			s += fmt.Sprintf(" -warmup %s", o.warmup)
		}
	}
	if len(o.scenarios) != len(scenarios) {
		s += " -scenarios " + strings.Join(o.scenarios, ",")
	}
	if o.veerRev != "" {
		s += " -veer-rev " + o.veerRev
	}
	if o.baseRev != "" {
		s += " -base-rev " + o.baseRev
	}
	if o.baseGo != "" {
		s += " -base-go " + o.baseGo
	}
	if o.stock {
		s += " -stock"
	}
	if o.baseStock {
		s += " -base-stock"
	}
	if o.upstreamEngine != "epoll" {
		s += " -upstream-engine " + o.upstreamEngine
	}
	if o.syscalls {
		s += " -syscalls"
	}
	if peers := slices.DeleteFunc(slices.Clone(o.proxies), func(p string) bool { return p == baseName }); len(peers) != len(proxyNames) {
		s += " -proxies " + strings.Join(peers, ",")
	}
	return s
}

// repoRoot is the directory above the working directory holding the
// module's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/veer-proxy/veer\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the veer repository (no go.mod of github.com/veer-proxy/veer above here)")
		}
		dir = parent
	}
}

// findTools finds nginx, haproxy, wrk and taskset, installing the Debian
// packages when they are missing and the harness runs as root.
func (e *env) findTools() error {
	want := map[string]string{"nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk", "taskset": "util-linux"}
	var missing []string
	for _, bin := range []string{"nginx", "haproxy", "wrk", "taskset"} {
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, want[bin])
		}
	}
	if len(missing) > 0 {
		if os.Geteuid() != 0 {
			return fmt.Errorf("missing %s; install them (apt-get install -y %s) or run the harness as root to have it do so",
				strings.Join(missing, ", "), strings.Join(missing, " "))
		}
		e.log("installing %s with apt-get", strings.Join(missing, " "))
		args := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			upd := exec.Command("apt-get", "update")
			if uout, uerr := upd.CombinedOutput(); uerr != nil {
				return fmt.Errorf("apt-get update: %v\n%s", uerr, uout)
			}
			cmd = exec.Command("apt-get", args...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err = cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get install %s: %v\n%s", strings.Join(missing, " "), err, out)
			}
		}
	}
	var err error
	if e.nginx, err = lookPath("nginx"); err != nil {
		return err
	}
	if e.haproxy, err = lookPath("haproxy"); err != nil {
		return err
	}
	if e.wrk, err = lookPath("wrk"); err != nil {
		return err
	}
	if _, err = lookPath("taskset"); err != nil {
		return err
	}
	if e.o.syscalls {
		if e.perf, err = lookPath("perf"); err != nil && os.Geteuid() == 0 {
			e.log("installing linux-perf with apt-get")
			cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "linux-perf")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, ierr := cmd.CombinedOutput(); ierr != nil {
				return fmt.Errorf("-syscalls needs perf: apt-get install linux-perf: %v\n%s", ierr, out)
			}
			e.perf, err = lookPath("perf")
		}
		if err != nil {
			return fmt.Errorf("-syscalls needs perf (Debian: apt-get install linux-perf): %w", err)
		}
	}
	return nil
}

// lookPath is exec.LookPath that also looks in the sbin directories, where
// Debian puts nginx and haproxy and a non-root PATH may not reach.
func lookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, bin)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or sbin", bin)
}

// archive extracts revision rev of the repository into a new directory
// under e.tmp and returns it.
func (e *env) archive(ctx context.Context, rev, name string) (string, error) {
	src := filepath.Join(e.tmp, name)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	e.log("git archive %s into %s", rev, src)
	cmd := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", e.root, rev, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s: %v\n%s", rev, err, out)
	}
	if _, err := os.Stat(filepath.Join(src, "cmd", "veer")); err != nil {
		return "", fmt.Errorf("revision %s has no cmd/veer", rev)
	}
	return src, nil
}

// build compiles veer, the upstream, veer-base (with -base-rev, -base-go
// or -base-stock) and veerprof (with -profile). veer and veerprof are the
// release build (cmd/veer-build's runtime overlay) unless -stock.
func (e *env) build(ctx context.Context) error {
	if rev := e.o.veerRev; rev != "" {
		src, err := e.archive(ctx, rev, "src")
		if err != nil {
			return err
		}
		e.o.veerSrc = src
	}
	if !e.o.stock {
		// The overlay is the toolchain's, not the source's: it applies as
		// well to a -veer-rev or -base-rev from before cmd/veer-build.
		dir := filepath.Join(e.tmp, "overlay")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		overlay, err := gobuild.OverlayFor("go", e.root, dir)
		if err != nil {
			return fmt.Errorf("the release build: %v (-stock builds veer without it)", err)
		}
		e.overlay = overlay
	}
	if e.o.hasBase() {
		if err := e.buildBase(ctx); err != nil {
			return err
		}
	}
	bins := []struct {
		dst *string
		pkg string
	}{{&e.veer, "./cmd/veer"}, {nil, "./bench/upstream"}}
	if e.o.profile {
		bins = append(bins, struct {
			dst *string
			pkg string
		}{&e.veerprof, "./bench/veerprof"})
	}
	for _, b := range bins {
		out := filepath.Join(e.tmp, filepath.Base(b.pkg))
		args := []string{"build", "-o", out}
		if e.overlay != "" && b.pkg != "./bench/upstream" {
			args = append(args, "-overlay", e.overlay)
		}
		e.log("go %s %s", strings.Join(args, " "), b.pkg)
		cmd := exec.CommandContext(ctx, "go", append(args, b.pkg)...)
		cmd.Dir = e.root
		if e.o.veerSrc != "" && b.pkg != "./bench/upstream" {
			cmd.Dir = e.o.veerSrc
		}
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, msg)
		}
		if b.dst != nil {
			*b.dst = out
		}
	}
	return nil
}

// buildBase compiles veer-base: from -base-rev's source, or veer's own,
// with -base-go's toolchain, or the one that builds veer; the release
// build unless -base-stock or -base-go (that toolchain as it is).
func (e *env) buildBase(ctx context.Context) error {
	src, what := e.root, "this tree"
	if e.o.veerSrc != "" {
		src, what = e.o.veerSrc, e.o.veerSrc
	}
	if rev := e.o.baseRev; rev != "" {
		var err error
		if src, err = e.archive(ctx, rev, "base-src"); err != nil {
			return err
		}
		what = rev
	}
	goBin, env := "go", os.Environ()
	if e.o.baseGo != "" {
		goBin = filepath.Join(e.o.baseGo, "bin", "go")
		// GOTOOLCHAIN=local: that toolchain itself, not one go.mod asks for.
		env = append(env, "GOROOT="+e.o.baseGo, "GOTOOLCHAIN=local")
		what += " with " + goBin
	}
	out := filepath.Join(e.tmp, "veer-base")
	args := []string{"build", "-o", out}
	if e.overlay != "" && !e.o.baseStock && e.o.baseGo == "" {
		args = append(args, "-overlay", e.overlay)
	}
	e.log("%s %s ./cmd/veer (%s)", goBin, strings.Join(args, " "), what)
	cmd := exec.CommandContext(ctx, goBin, append(args, "./cmd/veer")...)
	cmd.Dir, cmd.Env = src, env
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build veer-base (%s): %v\n%s", what, err, msg)
	}
	e.veerBase = out
	return nil
}

// maxConns is the most client connections every proxy can hold under
// the file limit: HAProxy reserves two descriptors per connection (client
// and server side) and refuses to start when maxconn would need more.
func (e *env) maxConns() int { return int(min(e.nofile, 1<<20)-100) / 2 }

// idleLimit is how many idle connections the memory scenario may open:
// what the proxies can hold, less a margin for the other sockets.
func (e *env) idleLimit() int { return e.maxConns() - 200 }

// raiseFileLimit lifts RLIMIT_NOFILE as far as it goes (children inherit
// it) and returns the soft limit now in force.
func raiseFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	for _, want := range []uint64{262144, 131072, 65536} {
		if rl.Max >= want && rl.Cur >= want {
			return rl.Cur
		}
		try := syscall.Rlimit{Cur: want, Max: max(want, rl.Max)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return want
		}
	}
	try := syscall.Rlimit{Cur: rl.Max, Max: rl.Max}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
		return rl.Max
	}
	return rl.Cur
}
