// Package e2e runs the real veer binary in front of real backends on
// loopback. TestMain builds the binary once, with the release build's
// runtime (internal/gobuild's overlay: netpoll in readiness order) so that
// the suite runs what ships, and with -race when the tests run with -race.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/veer-proxy/veer/internal/gobuild"
)

var veerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "veer-e2e-")
	if err != nil {
		panic(err)
	}
	veerBin = filepath.Join(dir, "veer")
	args := []string{"build", "-o", veerBin}
	overlayDir := filepath.Join(dir, "overlay")
	if err := os.Mkdir(overlayDir, 0o755); err != nil {
		panic(err)
	}
	if overlay, err := gobuild.OverlayFor("go", "..", overlayDir); err == nil {
		args = append(args, "-overlay", overlay)
	} else {
		// internal/gobuild's own tests fail on such a Go; the suite still
		// tests veer itself.
		fmt.Fprintln(os.Stderr, "e2e: testing veer built with Go's runtime as it is:", err)
	}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../cmd/veer")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot build veer:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Backend is a real HTTP backend on 127.0.0.1:0 that answers with its name
// and records what it received. Safe for concurrent use.
type Backend struct {
	Name      string
	Addr      string
	Hits      atomic.Int64
	status    atomic.Int64 // 0 = 200
	failEvery atomic.Int64 // answer 500 to every Nth request (0 = never)
	srv       *http.Server
	mu        sync.Mutex
	last      http.Header
	lastHost  string
	lastURI   string
}

// NewBackend starts a backend; it stops at the end of the test.
func NewBackend(t *testing.T, name string) *Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{Name: name, Addr: ln.Addr().String()}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve)}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *Backend) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		io.WriteString(w, "ok\n")
		return
	}
	n := b.Hits.Add(1)
	io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/slow" {
		time.Sleep(1500 * time.Millisecond)
	}
	b.mu.Lock()
	b.last, b.lastHost, b.lastURI = r.Header.Clone(), r.Host, r.RequestURI
	b.mu.Unlock()
	w.Header().Set("X-Backend", b.Name)
	if every := b.failEvery.Load(); every > 0 && n%every == 0 {
		w.WriteHeader(500)
		io.WriteString(w, b.Name+" failed\n")
		return
	}
	if s := b.status.Load(); s != 0 {
		w.WriteHeader(int(s))
	}
	io.WriteString(w, b.Name+"\n")
}

// FailEvery makes every nth request a 500 (0 turns it off).
func (b *Backend) FailEvery(n int) { b.failEvery.Store(int64(n)) }

// Last returns the headers, Host and request URI of the last request.
func (b *Backend) Last() (http.Header, string, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last, b.lastHost, b.lastURI
}

// Veer is a running veer binary.
type Veer struct {
	t          *testing.T
	Dir        string
	ConfigPath string
	ProxyAddr  string
	AdminAddr  string
	cmd        *exec.Cmd
	logMu      sync.Mutex
	log        bytes.Buffer
	done       chan struct{}
}

var servingRE = regexp.MustCompile(`veer is serving"? proxy=(\S+) admin=(\S+)`)

// StartVeer writes config (listen addresses may be 127.0.0.1:0) to a temp
// dir and starts veer serve on it, waiting until it serves.
func StartVeer(t *testing.T, config string) *Veer {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "veer.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return StartVeerIn(t, dir, path)
}

// StartVeerIn starts veer on an existing config file (for restarts).
func StartVeerIn(t *testing.T, dir, path string) *Veer {
	t.Helper()
	return startVeerArgs(t, dir, path)
}

// startVeerArgs starts veer serve with extra flags.
func startVeerArgs(t *testing.T, dir, path string, flags ...string) *Veer {
	t.Helper()
	v := &Veer{t: t, Dir: dir, ConfigPath: path, done: make(chan struct{})}
	v.cmd = exec.Command(veerBin, append([]string{"serve", "-config", path, "-log-level", "debug"}, flags...)...)
	v.cmd.Dir = dir
	pr, pw := io.Pipe()
	v.cmd.Stderr = pw
	v.cmd.Stdout = pw
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			v.logMu.Lock()
			v.log.WriteString(line + "\n")
			v.logMu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil {
				select {
				case ready <- [2]string{m[1], m[2]}:
				default:
				}
			}
		}
	}()
	go func() { v.cmd.Wait(); pw.Close(); close(v.done) }()
	t.Cleanup(func() { v.Stop() })
	select {
	case a := <-ready:
		v.ProxyAddr, v.AdminAddr = a[0], a[1]
	case <-v.done:
		t.Fatalf("veer exited before serving:\n%s", v.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("veer did not start in 30s:\n%s", v.Log())
	}
	return v
}

// Log returns what veer printed so far.
func (v *Veer) Log() string {
	v.logMu.Lock()
	defer v.logMu.Unlock()
	return v.log.String()
}

// Signal sends sig to veer.
func (v *Veer) Signal(sig syscall.Signal) { v.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits (up to 20s, then SIGKILL).
func (v *Veer) Stop() {
	select {
	case <-v.done:
		return
	default:
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(20 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
	}
}

// Wait waits for veer to exit and returns its exit code.
func (v *Veer) Wait(timeout time.Duration) (int, bool) {
	select {
	case <-v.done:
		return v.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// ProxyURL and AdminURL are base URLs.
func (v *Veer) ProxyURL() string { return "http://" + v.ProxyAddr }
func (v *Veer) AdminURL() string { return "http://" + v.AdminAddr }

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// Get sends a GET through veer with headers (name, value pairs) and returns
// status, the X-Veer-Version that served it and the body.
func Get(t *testing.T, url string, headers ...string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Veer-Version"), string(body)
}

// Eventually polls cond every 50ms until it is true or timeout passes.
func Eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
