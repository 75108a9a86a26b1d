package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// idleRun opens idle keep-alive connections to in, one request on each,
// and returns the growth of the proxy's resident memory per connection.
// 64 dialers work at once, so the proxies need no more upstream
// connections than in the other scenarios.
func idleRun(ctx context.Context, e *env, sc *scenario, in *instance) (*runResult, error) {
	n := min(e.o.idleConns, e.idleLimit())
	addr := fmt.Sprintf("127.0.0.1:%d", in.port)
	req := []byte(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: veer-bench\r\n\r\n", sc.Path, sc.host()))
	pids := in.pids()

	// Warm up: the buffers and upstream connections every proxy allocates
	// on its first requests are not what a connection costs.
	warm := make([]net.Conn, 0, 64)
	for range 64 {
		c, err := idleConn(ctx, addr, req)
		if err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		warm = append(warm, c)
	}
	for _, c := range warm {
		c.Close()
	}
	time.Sleep(500 * time.Millisecond)
	before, err := sumStatus(pids, "VmRSS")
	if err != nil {
		return nil, err
	}
	b0, c0, err := e.up.counts()
	if err != nil {
		return nil, err
	}

	conns := make([]net.Conn, n)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := idleConn(ctx, addr, req)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	time.Sleep(time.Second)
	after, err := sumStatus(pids, "VmRSS")
	if err != nil {
		return nil, err
	}
	if e.o.profile && in.name == "veer" {
		_ = in.cmd.Process.Signal(syscall.SIGUSR2) // veerprof: heap profile with the connections open
		time.Sleep(time.Second)
	}
	hwm, err := sumStatus(pids, "VmHWM")
	if err != nil {
		return nil, err
	}
	b1, c1, err := e.up.counts()
	if err != nil {
		return nil, err
	}
	open := n - int(failed.Load())
	r := &runResult{IdleConns: open, IdleFailed: int(failed.Load()), PeakRSS: hwm, Requests: int64(open),
		Non2xx: 0, Blue: b1 - b0, Canary: c1 - c0}
	if open > 0 {
		r.BytesPerConn = float64(after-before) / float64(open)
	}
	e.log("  %d idle connections (%d failed), RSS %.1f -> %.1f MiB: %.0f bytes per connection, peak %.1f MiB",
		open, failed.Load(), float64(before)/(1<<20), float64(after)/(1<<20), r.BytesPerConn, float64(hwm)/(1<<20))
	if open == 0 {
		return nil, fmt.Errorf("no idle connection opened: %v", firstErr.Load())
	}
	return r, nil
}

// idleConn dials addr, sends req and reads a 200 answer, leaving the
// connection open.
func idleConn(ctx context.Context, addr string, req []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func sumStatus(pids []int, key string) (int64, error) {
	var t int64
	for _, pid := range pids {
		v, err := statusKB(pid, key)
		if err != nil {
			return 0, err
		}
		t += v
	}
	return t, nil
}
