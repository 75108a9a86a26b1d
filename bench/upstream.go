package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// upstream is the harness's origin (bench/upstream) on two ports: blue
// takes the stable version's traffic and canary the candidate's, so the
// requests each port counted show the split a proxy made.
type upstream struct {
	cmd    *exec.Cmd
	blue   int
	canary int
	client *http.Client
}

func startUpstream(ctx context.Context, e *env) (*upstream, error) {
	blue, err := freePort()
	if err != nil {
		return nil, err
	}
	canary, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(e.tmp, "upstream.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	bin := filepath.Join(e.tmp, "upstream")
	cmd := exec.Command("taskset", "-c", e.o.loadCPU, bin,
		"-listen", fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d", blue, canary), "-engine", e.o.upstreamEngine)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	u := &upstream{cmd: cmd, blue: blue, canary: canary, client: &http.Client{Timeout: 5 * time.Second}}
	for _, p := range []int{blue, canary} {
		if err := waitPort(ctx, fmt.Sprintf("127.0.0.1:%d", p), 10*time.Second); err != nil {
			u.stop()
			return nil, fmt.Errorf("upstream: %w", err)
		}
	}
	e.log("upstream (%s engine) on 127.0.0.1:%d (blue) and :%d (canary), pid %d", e.o.upstreamEngine, blue, canary, cmd.Process.Pid)
	return u, nil
}

func (u *upstream) stop() { stopProcess(u.cmd, syscall.SIGTERM, 3*time.Second) }

func (u *upstream) pid() int { return u.cmd.Process.Pid }

// counts returns how many requests blue and canary have served.
func (u *upstream) counts() (blue, canary int64, err error) {
	get := func(port int) (int64, error) {
		resp, err := u.client.Get(fmt.Sprintf("http://127.0.0.1:%d/__bench/count", port))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if blue, err = get(u.blue); err != nil {
		return 0, 0, fmt.Errorf("upstream count: %w", err)
	}
	if canary, err = get(u.canary); err != nil {
		return 0, 0, fmt.Errorf("upstream count: %w", err)
	}
	return blue, canary, nil
}
