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
// tracepoint, for -syscalls, and the tasks they wake (sched:sched_waking,
// which fires in the waker: mostly wrk and the upstream, asleep in
// epoll_wait on the other CPU when the proxy's write reaches them).
type syscallCounter struct {
	cmd *exec.Cmd
	out string
}

// The events syscallCounter counts.
const (
	syscallEvent = "raw_syscalls:sys_enter"
	wakeEvent    = "sched:sched_waking"
)

// countSyscalls starts counting the system calls and wake-ups of pids into a file
// under dir. perf must be installed (Debian: linux-perf) and allowed to
// trace (root, or kernel.perf_event_paranoid at most -1).
func countSyscalls(perf string, pids []int, out string) (*syscallCounter, error) {
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	cmd := exec.Command(perf, "stat", "-x,", "-e", syscallEvent+","+wakeEvent, "-p", strings.Join(list, ","), "-o", out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf stat: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // perf attaches to every thread before it counts
	return &syscallCounter{cmd: cmd, out: out}, nil
}

// stop ends the count and returns the system calls and the wake-ups.
func (c *syscallCounter) stop() (calls, wakes int64, err error) {
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
		return 0, 0, fmt.Errorf("perf stat did not stop")
	}
	data, err := os.ReadFile(c.out)
	if err != nil {
		return 0, 0, err
	}
	if calls, err = parsePerfCount(data, syscallEvent); err != nil {
		return 0, 0, err
	}
	if wakes, err = parsePerfCount(data, wakeEvent); err != nil {
		return 0, 0, err
	}
	return calls, wakes, nil
}

// parsePerfCount reads the count of event from perf stat's CSV output
// (-x,): "COUNT,UNIT,EVENT,...".
func parsePerfCount(data []byte, event string) (int64, error) {
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Split(string(line), ",")
		if len(f) >= 3 && f[2] == event {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("perf stat: cannot read the count %q (is the tracepoint available? run as root)", f[0])
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("perf stat: no %s count in its output:\n%s", event, data)
}
