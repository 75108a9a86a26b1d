package accesslog

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func entry() *Entry {
	return &Entry{
		Time:      time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.UTC),
		Duration:  1234567 * time.Nanosecond,
		Client:    netip.MustParseAddr("10.0.0.1"),
		Method:    []byte("GET"),
		Path:      []byte("/cart?id=7"),
		Proto:     []byte("HTTP/1.1"),
		Host:      []byte("shop.example.com"),
		Status:    200,
		Bytes:     512,
		Referer:   []byte("https://ref.example/"),
		UserAgent: []byte("curl/8.0"),
		Route:     "shop",
		Version:   "canary",
		Backend:   "127.0.0.1:9021",
		RequestID: []byte("abc123"),
	}
}

func TestJSON(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(e *Entry)
		check map[string]any
	}{
		{name: "every field", edit: func(*Entry) {}, check: map[string]any{
			"time": "2026-03-04T05:06:07.890Z", "client": "10.0.0.1", "method": "GET", "path": "/cart?id=7",
			"proto": "HTTP/1.1", "host": "shop.example.com", "status": 200.0, "bytes": 512.0, "duration": 0.001235,
			"route": "shop", "version": "canary", "backend": "127.0.0.1:9021", "request_id": "abc123",
			"referer": "https://ref.example/", "user_agent": "curl/8.0",
		}},
		{name: "quotes, controls and bad UTF-8 escaped", edit: func(e *Entry) {
			e.Path = []byte("/a\"b\\c\n\x01\xff\xfeé")
			e.UserAgent = []byte("\t\r")
		}, check: map[string]any{"path": "/a\"b\\c\n\x01\ufffd\ufffdé", "user_agent": "\t\r"}},
		{name: "no route, no client", edit: func(e *Entry) {
			e.Route, e.Version, e.Backend, e.Client, e.RequestID = "", "", "", netip.Addr{}, nil
			e.Status = 404
		}, check: map[string]any{"route": "", "version": "", "backend": "", "client": "", "request_id": "", "status": 404.0}},
		{name: "IPv6 client", edit: func(e *Entry) { e.Client = netip.MustParseAddr("::1") }, check: map[string]any{"client": "::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := entry()
			tt.edit(e)
			line := appendJSON(nil, e)
			if !strings.HasSuffix(string(line), "}\n") || strings.Count(string(line), "\n") != 1 {
				t.Fatalf("not one line: %q", line)
			}
			var got map[string]any
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, line)
			}
			for k, want := range tt.check {
				if got[k] != want {
					t.Errorf("%s: got %#v, want %#v", k, got[k], want)
				}
			}
		})
	}
}

var combinedRE = regexp.MustCompile(`^(\S+) - - \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)" route=(\S+) version=(\S+) backend=(\S+) request_id=(\S+) duration=([0-9.]+)\n$`)

func TestCombined(t *testing.T) {
	e := entry()
	line := string(appendCombined(nil, e))
	want := `10.0.0.1 - - [04/Mar/2026:05:06:07 +0000] "GET /cart?id=7 HTTP/1.1" 200 512 "https://ref.example/" "curl/8.0" route=shop version=canary backend=127.0.0.1:9021 request_id=abc123 duration=0.001235` + "\n"
	if line != want {
		t.Errorf("got  %q\nwant %q", line, want)
	}
	e.Path = []byte(`/x"y\z é`)
	e.UserAgent = nil
	e.Referer = nil
	e.RequestID = []byte("has space")
	e.Route, e.Version, e.Backend = "", "", ""
	e.Bytes = -1
	line = string(appendCombined(nil, e))
	m := combinedRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("does not parse as combined: %q", line)
	}
	for i, want := range map[int]string{3: `GET /x\x22y\x5Cz \xC3\xA9 HTTP/1.1`, 5: "-", 6: "-", 7: "-", 8: "-", 11: `has\x20space`} {
		if m[i] != want {
			t.Errorf("field %d: got %q, want %q", i, m[i], want)
		}
	}
}

// blockingWriter blocks every Write until released.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     strings.Builder
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestFullBufferDrops: with the writer stalled, Log does not block; lines
// beyond the buffer are dropped and counted, and the others are written
// once the writer moves again.
func TestFullBufferDrops(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	l, err := New(Options{Writer: w, Buffer: 4, Registerer: reg, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			l.Log(entry())
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Log blocked on a stalled writer")
	}
	dropped := l.Dropped()
	// The channel holds 4; the writer took a few into its buffer
	// before blocking in a flush.
	if dropped < 1 || dropped > n-4 {
		t.Errorf("dropped %d of %d lines with a buffer of 4, want 1 to %d", dropped, n, n-4)
	}
	if got := testutil.ToFloat64(l.dropped); got != float64(dropped) {
		t.Errorf("veer_access_log_dropped_total: got %v, want %d", got, dropped)
	}
	close(w.release)
	l.Close()
	w.mu.Lock()
	written := strings.Count(w.buf.String(), "\n")
	w.mu.Unlock()
	if int64(written)+dropped != n {
		t.Errorf("written %d + dropped %d != %d logged", written, dropped, n)
	}
	l.Log(entry()) // after Close: discarded, no panic
}

// TestReopen: after the file is renamed (logrotate), lines keep going to
// the renamed file until Reopen, then to a new file at the path.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := New(Options{Path: path, Format: Combined, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	logN := func(n int, route string) {
		for i := 0; i < n; i++ {
			e := entry()
			e.Route = route
			l.Log(e)
		}
	}
	lines := func(p string) []string {
		data, _ := os.ReadFile(p)
		var out []string
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			out = append(out, sc.Text())
		}
		return out
	}
	waitLines := func(p string, n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(lines(p)) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d lines, want %d", p, len(lines(p)), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	logN(3, "before")
	waitLines(path, 3)
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	logN(2, "renamed")
	waitLines(rotated, 5)
	l.Reopen()
	deadline := time.Now().Add(5 * time.Second)
	for { // Reopen is asynchronous: log until the new file appears
		logN(1, "after")
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new file 5s after Reopen")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Close()
	for _, ln := range lines(path) {
		if !strings.Contains(ln, "route=after") {
			t.Errorf("new file has a line from before the reopen: %s", ln)
		}
	}
	old := lines(rotated)
	for i, ln := range old[:5] {
		want := "route=before"
		if i >= 3 {
			want = "route=renamed"
		}
		if !strings.Contains(ln, want) {
			t.Errorf("rotated file line %d: %s, want %s", i+1, ln, want)
		}
	}
	if len(lines(path)) == 0 {
		t.Error("new file is empty")
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(Options{Path: filepath.Join(t.TempDir(), "no", "such", "dir", "a.log")}); err == nil {
		t.Error("New in a missing directory: got no error")
	}
	if _, err := New(Options{Path: "stdout", Format: "xml"}); err == nil {
		t.Error("New with format xml: got no error")
	}
}
