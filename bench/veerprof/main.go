// Command veerprof is `veer serve` with a CPU profile and a heap profile:
// the bench harness runs it instead of veer when given -profile, so that
// the profile is of the very process the numbers come from. It profiles
// from start to SIGTERM and writes FILE.cpu.pprof and FILE.heap.pprof;
// on SIGUSR2 it writes the heap as it is then to FILE.live.heap.pprof (the
// harness sends it while the idle connections are open).
//
// Usage: veerprof -config veer.yaml -profile /tmp/get64
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/veer-proxy/veer/app"
	"github.com/veer-proxy/veer/config"
)

func main() {
	file := flag.String("config", "veer.yaml", "config `FILE`")
	prefix := flag.String("profile", "veer", "profile `PREFIX`: writes PREFIX.cpu.pprof and PREFIX.heap.pprof")
	flag.Parse()
	if err := run(*file, *prefix); err != nil {
		fmt.Fprintln(os.Stderr, "veerprof:", err)
		os.Exit(1)
	}
}

func run(file, prefix string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	a, err := app.New(app.Options{Config: cfg, Log: log, NoWatch: true})
	if err != nil {
		return err
	}
	cpu, err := os.Create(prefix + ".cpu.pprof")
	if err != nil {
		return err
	}
	defer cpu.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	go func() {
		for range usr2 {
			if err := writeHeap(prefix + ".live.heap.pprof"); err != nil {
				log.Error("live heap profile", "err", err)
			}
		}
	}()
	runErr := a.Run(ctx)
	pprof.StopCPUProfile()
	if err := writeHeap(prefix + ".heap.pprof"); err != nil {
		return err
	}
	return runErr
}

// writeHeap writes the allocation profile (in use and allocated since
// start) after a GC, so that in-use figures are current.
func writeHeap(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
