// Package gobuild is veer's release build: `go build` with one line of
// Go's runtime changed through an overlay (go help build, -overlay), so
// that the goroutines one epoll_wait finds ready run in the order their
// sockets became ready.
//
// Stock Go runs them in the reverse order. netpoll (runtime/netpoll_epoll.go)
// walks epoll's events first to last and hands each waiting goroutine to
// netpollready, which pushes it onto the front of a list (toRun.push in
// runtime/netpoll.go); the scheduler then runs the list front to back. So
// the connection that became ready first in a batch is served last, after
// every one that came after it. On one core under load, where a batch holds
// tens of connections, that widens a proxy's latency: in bench's get64 runs
// veer built this way had a p99 about a fifth lower than stock (0.77–0.79 ×
// in runs of 5 and 15 rounds) at about the same throughput (0.98–1.02 ×);
// 1 MiB answers lost a few percent of throughput (0.91–0.94 ×).
//
// The change walks the events from last to first, which makes the list,
// and so the run order, first-ready first. Nothing else in the runtime
// changes, the source files on disk are not touched, and a Go whose netpoll
// no longer has the loop this expects (or no longer pushes onto the front)
// is refused with an error rather than changed blindly.
package gobuild

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The loop Patch changes, in runtime/netpoll_epoll.go's netpoll, and what
// it becomes.
const (
	forwardLoop  = "\tfor i := int32(0); i < n; i++ {"
	backwardLoop = "\tfor i := n - 1; i >= 0; i-- { // veer gobuild: netpollready pushes onto the front, so walk back to run first-ready first"
	// pushFront is how netpollready (runtime/netpoll.go) adds a goroutine
	// to the list netpoll returns; walking backwards is only right while
	// it adds to the front.
	pushFront = "toRun.push("
)

// ErrUnknownRuntime is returned for a Go whose netpoll does not have the
// shape Patch changes: a Go release that rewrote it (and perhaps fixed the
// order), or a runtime already changed.
var ErrUnknownRuntime = errors.New("runtime/netpoll_epoll.go does not have the loop veer's release build changes")

// Patch returns netpoll_epoll.go's source with netpoll's event loop walked
// backwards. netpollGo is runtime/netpoll.go's source, read to check that
// netpollready still pushes onto the front of the list.
func Patch(epollGo, netpollGo []byte) ([]byte, error) {
	if n := bytes.Count(epollGo, []byte(forwardLoop+"\n")); n != 1 {
		return nil, fmt.Errorf("%w (found it %d times, want once)", ErrUnknownRuntime, n)
	}
	if !bytes.Contains(netpollGo, []byte(pushFront)) {
		return nil, fmt.Errorf("%w: runtime/netpoll.go's netpollready no longer calls %s", ErrUnknownRuntime, strings.TrimSuffix(pushFront, "("))
	}
	return bytes.Replace(epollGo, []byte(forwardLoop+"\n"), []byte(backwardLoop+"\n"), 1), nil
}

// Overlay writes the changed netpoll_epoll.go of the Go toolchain in
// goroot, and the overlay file that puts it in place of the original, into
// dir, and returns the overlay file's path for go build -overlay.
func Overlay(goroot, dir string) (string, error) {
	src := filepath.Join(goroot, "src", "runtime")
	orig := filepath.Join(src, "netpoll_epoll.go")
	epollGo, err := os.ReadFile(orig)
	if err != nil {
		return "", err
	}
	netpollGo, err := os.ReadFile(filepath.Join(src, "netpoll.go"))
	if err != nil {
		return "", err
	}
	patched, err := Patch(epollGo, netpollGo)
	if err != nil {
		return "", fmt.Errorf("%s: %w", goroot, err)
	}
	repl := filepath.Join(dir, "netpoll_epoll.go")
	if err := os.WriteFile(repl, patched, 0o644); err != nil {
		return "", err
	}
	js, err := json.Marshal(struct{ Replace map[string]string }{map[string]string{orig: repl}})
	if err != nil {
		return "", err
	}
	overlay := filepath.Join(dir, "overlay.json")
	return overlay, os.WriteFile(overlay, js, 0o644)
}

// GoEnv returns `go env NAME` of the go command goBin, run in dir (so that
// the toolchain go.mod selects answers, the one that will build).
func GoEnv(goBin, dir, name string) (string, error) {
	cmd := exec.Command(goBin, "env", name)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s env %s: %v: %s", goBin, name, err, bytes.TrimSpace(ee.Stderr))
		}
		return "", fmt.Errorf("%s env %s: %v", goBin, name, err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("%s env %s: empty", goBin, name)
	}
	return v, nil
}

// OverlayFor writes the overlay for the toolchain that goBin runs in dir
// into tmp and returns its path.
func OverlayFor(goBin, dir, tmp string) (string, error) {
	goroot, err := GoEnv(goBin, dir, "GOROOT")
	if err != nil {
		return "", err
	}
	return Overlay(goroot, tmp)
}
