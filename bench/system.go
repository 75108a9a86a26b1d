package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// machine is what the results say about where they were taken.
type machine struct {
	CPUs    int
	CPU     string
	Kernel  string
	Go      string
	Veer    string // git revision, with "-dirty" when the tree had changes
	Base    string // what veer-base is: -base-rev, -base-go or -base-stock ("" without them)
	Build   string // how veer was built: the release build or -stock
	Nginx   string
	HAProxy string
	Wrk     string
}

func describeMachine(ctx context.Context, e *env) machine {
	m := machine{CPUs: runtime.NumCPU(), CPU: cpuModel()}
	run := func(dir, name string, args ...string) string {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	m.Kernel = run("", "uname", "-sr")
	m.Go = run(e.root, "go", "version")
	switch {
	case e.o.veerRev != "":
		m.Veer = run(e.root, "git", "rev-parse", "--short=12", e.o.veerRev+"^{commit}")
	case e.o.veerSrc != "":
		m.Veer = run(e.o.veerSrc, "git", "rev-parse", "--short=12", "HEAD")
		if strings.Contains(m.Veer, "fatal") || m.Veer == "" {
			m.Veer = "unknown"
		}
		m.Veer += " from " + e.o.veerSrc
	default:
		m.Veer = run(e.root, "git", "rev-parse", "--short=12", "HEAD")
		// Uncommitted changes to Go files were built in.
		if run(e.root, "git", "status", "--porcelain", "--", "*.go", "go.mod", "go.sum") != "" {
			m.Veer += " plus uncommitted changes"
		}
	}
	m.Build = "the release build (cmd/veer-build: Go's netpoll runs a batch in readiness order)"
	if e.o.stock {
		m.Build = "plain go build (-stock: Go's runtime as it is)"
	}
	if e.o.baseRev != "" {
		m.Base = run(e.root, "git", "rev-parse", "--short=12", e.o.baseRev+"^{commit}")
	} else if e.o.baseGo != "" || e.o.baseStock {
		m.Base = "veer's own source"
	}
	switch {
	case e.o.baseStock:
		m.Base += " built with plain go build (Go's runtime as it is)"
	case e.o.baseRev != "" && !e.o.stock:
		m.Base += " as the release build"
	}
	if e.o.baseGo != "" {
		m.Base += " built with " + run("", filepath.Join(e.o.baseGo, "bin", "go"), "version") + " from " + e.o.baseGo
	}
	m.Nginx = strings.TrimPrefix(firstLine(run("", e.nginx, "-v")), "nginx version: nginx/")
	m.HAProxy = firstLine(run("", e.haproxy, "-v"))
	m.HAProxy = strings.TrimPrefix(m.HAProxy, "HAProxy version ")
	if i := strings.Index(m.HAProxy, " - "); i > 0 {
		m.HAProxy = m.HAProxy[:i]
	}
	m.Wrk = firstLine(run("", e.wrk, "-v"))
	if i := strings.Index(m.Wrk, " ["); i > 0 {
		m.Wrk = m.Wrk[:i]
	}
	return m
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

// busyTicks is the time all CPUs spent not idle (not idle, not iowait)
// since boot, from /proc/stat, in clock ticks.
func busyTicks() (int64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return busy, nil
}

// cpuTicks is utime+stime of pid from /proc/PID/stat, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	u, s, err := userSysTicks(pid)
	return u + s, err
}

// userSysTicks is utime and stime of pid from /proc/PID/stat, in clock
// ticks.
func userSysTicks(pid int) (user, sys int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return u, s, nil
}

// statusKB reads a "kB" line (VmHWM, VmRSS) of /proc/PID/status, in bytes.
func statusKB(pid int, key string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, key)
}

// children lists pid's child processes.
func children(pid int) []int {
	var out []int
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	// Kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent.
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		n, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitPort waits until addr accepts connections.
func waitPort(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopProcess sends sig, then SIGKILL if the process has not exited
// within limit, and reaps it.
func stopProcess(cmd *exec.Cmd, sig syscall.Signal, limit time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
	}
	// nginx's worker, should its master have died first: the harness
	// starts every process in a group of its own.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
