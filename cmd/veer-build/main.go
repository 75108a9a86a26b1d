// Command veer-build builds veer's release binary: static (CGO_ENABLED=0),
// -trimpath, stripped, and with Go's netpoll running the goroutines that one
// epoll_wait finds ready in the order their sockets became ready (see
// internal/gobuild). It is what the Dockerfile and the bench harness build.
//
//	go run ./cmd/veer-build -o veer
//	go run ./cmd/veer-build -o veer -stock   # the same, with Go's runtime as it is
//
// A plain `go build ./cmd/veer` gives the same veer with stock Go's order.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/veer-proxy/veer/internal/gobuild"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("veer-build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "veer", "write the binary to `FILE`")
	stock := fs.Bool("stock", false, "leave Go's runtime as it is (netpoll runs a batch last-ready first)")
	goBin := fs.String("go", "go", "the go `command` to build with")
	dir := fs.String("C", ".", "veer's source `DIR` (the module root)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./cmd/veer-build [-o FILE] [-stock] [-go CMD] [-C DIR]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "veer-build: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	abs, err := filepath.Abs(*out)
	if err != nil {
		fmt.Fprintln(stderr, "veer-build:", err)
		return 1
	}
	build := []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", abs}
	what := "stock Go runtime"
	goos, err := gobuild.GoEnv(*goBin, *dir, "GOOS")
	if err != nil {
		fmt.Fprintf(stderr, "veer-build: %v\n", err)
		return 1
	}
	if goos != "linux" && !*stock {
		// netpoll_epoll.go is Linux's; other systems' pollers are left as
		// they are.
		*stock, what = true, "stock Go runtime: the change is to Linux's netpoll, and GOOS is "+goos
	}
	if !*stock {
		tmp, err := os.MkdirTemp("", "veer-build-")
		if err != nil {
			fmt.Fprintln(stderr, "veer-build:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		overlay, err := gobuild.OverlayFor(*goBin, *dir, tmp)
		if err != nil {
			fmt.Fprintf(stderr, "veer-build: %v\n(-stock builds without the change)\n", err)
			return 1
		}
		build = append(build, "-overlay", overlay)
		what = "netpoll in readiness order"
	}
	cmd := exec.Command(*goBin, append(build, "./cmd/veer")...)
	cmd.Dir = *dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(stderr, "veer-build: %s %v: %v\n", *goBin, build, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s (%s)\n", abs, what)
	return 0
}
