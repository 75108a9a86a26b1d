// Command veer is a Layer-7 reverse proxy for safe releases. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/veer-proxy/veer/app"
	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/demo"
)

const usage = `veer: a reverse proxy for safe releases

usage:
  veer serve    [-config FILE]     run the proxy (FILE defaults to veer.yaml)
  veer validate [-config FILE]     check FILE; print every problem as FILE:LINE: message
  veer demo     [-no-traffic]      a self-contained tour on loopback
  veer demo     -upstreams-only    only the demo upstreams, for docs/recipes
  veer status   [ROUTE]            routes, versions, weights, error rate, p99, health, phase
  veer weights  ROUTE VERSION=PCT ...
  veer switch   ROUTE VERSION      100% to VERSION now
  veer promote  ROUTE [VERSION]    make VERSION the stable one at 100%
  veer rollback ROUTE              all traffic back to stable now
  veer pause    ROUTE / veer resume ROUTE
  veer history  ROUTE
  veer undo     ROUTE [-to-revision N]

Control commands talk to the admin API: -admin URL (default $VEER_ADMIN, else
http://127.0.0.1:9901), token from $VEER_ADMIN_TOKEN; -o json for scripts.
Run 'veer COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(rest, stderr)
	case "validate":
		return validate(rest, stdout, stderr)
	case "demo":
		return runDemo(rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if c, ok := controlCommands[cmd]; ok {
		return c(rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "veer: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "veer.yaml", "config `FILE`")
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := configFlag(fs)
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	noWatch := fs.Bool("no-watch", false, "do not watch the config file; reload only on SIGHUP")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "veer serve: bad -log-level %q\n", *level)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	cfg, err := config.Load(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	a, err := app.New(app.Options{Config: cfg, Log: log, NoWatch: *noWatch})
	if err != nil {
		fmt.Fprintf(stderr, "veer serve: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			log.Info("SIGHUP: reloading the config", "file", cfg.File)
			a.Reload()
		}
	}()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			log.Info("SIGUSR1: reopening the access log")
			a.ReopenLogs()
		}
	}()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "veer serve: %v\n", err)
		return 1
	}
	return 0
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := config.Load(*file); err != nil {
		for _, p := range config.Problems(err) {
			fmt.Fprintln(stderr, p.Error())
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *file)
	return 0
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	noTraffic := fs.Bool("no-traffic", false, "send no synthetic traffic: drive it with curl and the CLI")
	proxyAddr := fs.String("listen", "127.0.0.1:8080", "proxy `ADDR` (use 127.0.0.1:0 for any free port)")
	adminAddr := fs.String("admin-listen", "127.0.0.1:9901", "admin `ADDR` (use 127.0.0.1:0 for any free port)")
	upstreamsOnly := fs.Bool("upstreams-only", false, "start only the demo upstreams (blue, green, canary) on example.yaml's ports and wait for Ctrl-C")
	failCanary := fs.Float64("fail-canary", 0, "with -upstreams-only: the canary answers 500 to `PCT` percent of requests from the start")
	failGreen := fs.Float64("fail-green", 0, "with -upstreams-only: green answers 500 to `PCT` percent of requests from the start")
	addrs := map[string]*string{}
	for _, v := range []string{"blue", "green", "canary"} {
		var def []string
		for _, s := range demo.DefaultUpstreams {
			if s.Version == v {
				def = append(def, s.Addr)
			}
		}
		addrs[v] = fs.String(v, strings.Join(def, ","), "with -upstreams-only: the "+v+" upstreams' `ADDRS`, comma-separated")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "veer demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *upstreamsOnly {
		o := demo.UpstreamsOptions{Out: stdout, FailRate: map[string]float64{}}
		for v, pct := range map[string]float64{"canary": *failCanary, "green": *failGreen} {
			if pct < 0 || pct > 100 {
				fmt.Fprintf(stderr, "veer demo: -fail-%s %v: want a percentage from 0 to 100\n", v, pct)
				return 2
			}
			o.FailRate[v] = pct / 100
		}
		for _, v := range []string{"blue", "green", "canary"} {
			for a := range strings.SplitSeq(*addrs[v], ",") {
				if a = strings.TrimSpace(a); a != "" {
					o.Upstreams = append(o.Upstreams, demo.UpstreamSpec{Version: v, Addr: a})
				}
			}
		}
		if len(o.Upstreams) == 0 {
			fmt.Fprintln(stderr, "veer demo: -upstreams-only with no upstream address")
			return 2
		}
		if err := demo.RunUpstreams(ctx, o); err != nil {
			fmt.Fprintf(stderr, "veer demo: %v\n", err)
			return 1
		}
		return 0
	}
	for _, f := range []string{"fail-canary", "fail-green", "blue", "green", "canary"} {
		if isSet(fs, f) {
			fmt.Fprintf(stderr, "veer demo: -%s needs -upstreams-only\n", f)
			return 2
		}
	}
	err := demo.Run(ctx, demo.Options{Out: stdout, NoTraffic: *noTraffic, ProxyAddr: *proxyAddr, AdminAddr: *adminAddr})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "veer demo: %v\n", err)
		return 1
	}
	return 0
}
