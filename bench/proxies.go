package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proxyNames is the order the proxies take their turns in.
var proxyNames = []string{"veer", "nginx", "haproxy"}

// baseName is veer built from -base-rev, which takes its turn right after
// veer with the same config.
const baseName = "veer-base"

// Every proxy gets the same split (blue 90, canary 10), the same upstream
// keep-alive, the same forwarding headers (X-Forwarded-For/-Proto/-Host,
// X-Request-Id), active health checks where the proxy has them (veer,
// HAProxy; nginx has only passive ones) and no access log.
const (
	weightBlue   = 90
	weightCanary = 10
)

// instance is a running proxy under test.
type instance struct {
	name    string
	cmd     *exec.Cmd
	port    int
	log     string
	stopSig syscall.Signal
}

// pids are the processes whose CPU and memory count: nginx's master and
// worker, or the one process of veer and HAProxy.
func (in *instance) pids() []int {
	pid := in.cmd.Process.Pid
	return append([]int{pid}, children(pid)...)
}

func (in *instance) stop() { stopProcess(in.cmd, in.stopSig, 10*time.Second) }

// startProxy writes name's config for sc into dir and starts it pinned to
// the proxy CPU, returning once it answers a request with 200.
func startProxy(ctx context.Context, e *env, name string, sc *scenario, dir, profile string) (*instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	in := &instance{name: name, port: port, log: filepath.Join(dir, name+".log"), stopSig: syscall.SIGTERM}
	var args, environ []string
	switch name {
	case "veer", baseName:
		admin, err := freePort()
		if err != nil {
			return nil, err
		}
		file := filepath.Join(dir, "veer.yaml")
		if err := os.WriteFile(file, []byte(veerConfig(sc, dir, port, admin, e.up)), 0o644); err != nil {
			return nil, err
		}
		args = []string{e.veer, "serve", "-config", file}
		if name == baseName {
			args[0] = e.veerBase
		} else if profile != "" {
			args = []string{e.veerprof, "-config", file, "-profile", profile}
		}
		environ = []string{"GOMAXPROCS=1"}
	case "nginx":
		file := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(file, []byte(nginxConfig(sc, dir, port, e.up, e.nofile)), 0o644); err != nil {
			return nil, err
		}
		args = []string{e.nginx, "-p", dir, "-c", file, "-e", filepath.Join(dir, "nginx-error.log")}
	case "haproxy":
		file := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(file, []byte(haproxyConfig(sc, dir, port, e.up, haproxyMaxConn(e, sc))), 0o644); err != nil {
			return nil, err
		}
		if sc.routes() > 1 {
			if err := os.WriteFile(filepath.Join(dir, "hosts.map"), []byte(haproxyMap(sc)), 0o644); err != nil {
				return nil, err
			}
		}
		args = []string{e.haproxy, "-db", "-f", file}
	default:
		return nil, fmt.Errorf("unknown proxy %q", name)
	}
	logf, err := os.Create(in.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("taskset", append([]string{"-c", e.o.proxyCPU}, args...)...)
	cmd.Env = append(os.Environ(), environ...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	in.cmd = cmd
	exited, watching := make(chan struct{}), make(chan struct{})
	go func() {
		// Notice an early exit (a bad config) without reaping it: stop does.
		for {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
			if err != nil || strings.Contains(string(st), ") Z ") {
				close(exited)
				return
			}
			select {
			case <-watching:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	err = in.waitReady(ctx, sc, exited)
	close(watching)
	if err != nil {
		in.stop()
		logText, _ := os.ReadFile(in.log)
		if name == "nginx" {
			t, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
			logText = append(logText, t...)
		}
		if len(logText) > 2000 {
			logText = logText[len(logText)-2000:]
		}
		return nil, fmt.Errorf("%s did not come up: %w\n%s", name, err, logText)
	}
	return in, nil
}

// waitReady polls until a GET with sc's Host answers 200.
func (in *instance) waitReady(ctx context.Context, sc *scenario, exited <-chan struct{}) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d%s", in.port, sc.Path), nil)
		req.Host = sc.host()
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("it exited: %v", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no 200 within 20s: %v", last)
}

func routeHost(i int) string { return fmt.Sprintf("r%d.bench.local", i) }

// veerConfig is a veer config as users run it: metrics (always on), the
// rollback judge and active health checks on, the sticky header set.
func veerConfig(sc *scenario, dir string, port, admin int, up *upstream) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:%d\nadmin:\n  listen: 127.0.0.1:%d\nstate_file: %s\nroutes:\n",
		port, admin, filepath.Join(dir, "veer-state.json"))
	n := sc.routes()
	for i := range n {
		name, match := "bench", ""
		if n > 1 {
			name, match = fmt.Sprintf("r%d", i), fmt.Sprintf("    match: {host: %s}\n", routeHost(i))
		}
		fmt.Fprintf(&b, `  - name: %s
%s    stable: blue
    versions:
      blue:   {backends: ["127.0.0.1:%d"]}
      canary: {backends: ["127.0.0.1:%d"]}
    weights: {blue: %d, canary: %d}
    candidate: canary
    sticky: {header: X-User-ID}
    rollback: {max_error_rate: 5, window: 30s, min_requests: 20}
    health_check: {path: /healthz, interval: 5s, timeout: 1s}
`, name, match, up.blue, up.canary, weightBlue, weightCanary)
	}
	return b.String()
}

// nginxConfig: one worker, keep-alive to the upstream (keepalive 64,
// HTTP/1.1, Connection ""), weighted round robin (or a consistent hash of
// X-User-ID for the sticky scenario), no access log. keepalive_requests is
// raised on both sides because veer and HAProxy do not close a
// connection after 1,000 requests and nginx does by default.
func nginxConfig(sc *scenario, dir string, port int, up *upstream, nofile uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, `worker_processes 1;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
worker_rlimit_nofile %[2]d;
events { worker_connections %[2]d; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy_temp;
  fastcgi_temp_path %[1]s/fastcgi_temp;
  uwsgi_temp_path %[1]s/uwsgi_temp;
  scgi_temp_path %[1]s/scgi_temp;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_max_body_size 2m;
  client_body_buffer_size 128k;
  server_names_hash_max_size 4096;
  server_names_hash_bucket_size 64;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header X-Request-Id $request_id;
  proxy_connect_timeout 1s;
  proxy_read_timeout 30s;
`, dir, nofile)
	upstreamBlock := func(name string) {
		fmt.Fprintf(&b, "  upstream %s {\n", name)
		if sc.Sticky {
			b.WriteString("    hash $http_x_user_id consistent;\n")
		}
		fmt.Fprintf(&b, "    server 127.0.0.1:%d weight=%d;\n    server 127.0.0.1:%d weight=%d;\n    keepalive 64;\n    keepalive_requests 1000000;\n  }\n",
			up.blue, weightBlue, up.canary, weightCanary)
	}
	n := sc.routes()
	if n == 1 {
		upstreamBlock("bench")
		fmt.Fprintf(&b, "  server {\n    listen 127.0.0.1:%d backlog=4096;\n    server_name _;\n    location / { proxy_pass http://bench; }\n  }\n", port)
	} else {
		for i := range n {
			upstreamBlock(fmt.Sprintf("r%d", i))
			listen := fmt.Sprintf("127.0.0.1:%d", port)
			if i == 0 { // listen options may be given once per address
				listen += " backlog=4096"
			}
			fmt.Fprintf(&b, "  server {\n    listen %s;\n    server_name %s;\n    location / { proxy_pass http://r%d; }\n  }\n", listen, routeHost(i), i)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// haproxyConfig: one thread, http-reuse always, weighted round robin (or
// balance hdr(X-User-ID) with consistent hashing), HTTP health checks, no
// log. With many routes the host picks the backend through a map, the way
// HAProxy users route many hosts.
func haproxyConfig(sc *scenario, dir string, port int, up *upstream, maxconn int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
  nbthread 1
  maxconn %[2]d

defaults
  mode http
  no log
  option forwardfor
  http-reuse always
  timeout connect 1s
  timeout client 60s
  timeout server 30s
  timeout http-request 10s
  timeout http-keep-alive 60s

frontend fe
  bind 127.0.0.1:%[1]d
  maxconn %[2]d
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %%[req.hdr(host)]
  unique-id-format %%{+X}o%%ci%%cp%%fp%%Ts%%rt
  unique-id-header X-Request-Id
`, port, maxconn)
	n := sc.routes()
	if n == 1 {
		b.WriteString("  default_backend bench\n")
	} else {
		fmt.Fprintf(&b, "  use_backend %%[req.hdr(host),lower,map(%s/hosts.map)]\n", dir)
	}
	backend := func(name string) {
		fmt.Fprintf(&b, "\nbackend %s\n", name)
		if sc.Sticky {
			b.WriteString("  balance hdr(X-User-ID)\n  hash-type consistent\n")
		} else {
			b.WriteString("  balance roundrobin\n")
		}
		fmt.Fprintf(&b, "  option httpchk\n  http-check send meth GET uri /healthz\n  server blue 127.0.0.1:%d weight %d check inter 5s\n  server canary 127.0.0.1:%d weight %d check inter 5s\n",
			up.blue, weightBlue, up.canary, weightCanary)
	}
	if n == 1 {
		backend("bench")
	} else {
		for i := range n {
			backend(fmt.Sprintf("r%d", i))
		}
	}
	return b.String()
}

// haproxyMaxConn is as many connections as the file limit lets HAProxy
// take: it needs two descriptors per connection and one per checked server.
func haproxyMaxConn(e *env, sc *scenario) int { return e.maxConns() - sc.routes() - 50 }

func haproxyMap(sc *scenario) string {
	var b strings.Builder
	for i := range sc.routes() {
		fmt.Fprintf(&b, "%s r%d\n", routeHost(i), i)
	}
	return b.String()
}
