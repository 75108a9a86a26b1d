package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// syscallCounter counts the system calls of a set of processes (every
// thread each has when it starts) with perf stat's raw_syscalls:sys_enter
// tracepoint, for -syscalls.
type syscallCounter struct {
	cmd *exec.Cmd
	out string
}

// countSyscalls starts counting the system calls of pids into a file
// under dir. perf must be installed (Debian: linux-perf) and allowed to
// trace (root, or kernel.perf_event_paranoid at most -1).
func countSyscalls(perf string, pids []int, out string) (*syscallCounter, error) {
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	cmd := exec.Command(perf, "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strings.Join(list, ","), "-o", out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // perf attaches to every thread before it counts
	return &syscallCounter{cmd: cmd, out: out}, nil
}

// stop ends the count and returns it.
func (c *syscallCounter) stop() (int64, error) {
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
		return 0, fmt.Errorf("perf stat did not stop")
	}
	data, err := os.ReadFile(c.out)
	if err != nil {
		return 0, err
	}
	return parsePerfCount(data)
}

// parsePerfCount reads the count of raw_syscalls:sys_enter from perf
// stat's CSV output (-x,): "COUNT,UNIT,EVENT,...".
func parsePerfCount(data []byte) (int64, error) {
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Split(string(line), ",")
		if len(f) >= 3 && f[2] == "raw_syscalls:sys_enter" {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("perf stat: cannot read the count %q (is the tracepoint available? run as root)", f[0])
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("perf stat: no raw_syscalls:sys_enter count in its output:\n%s", data)
}
