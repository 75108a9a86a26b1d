package demo

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUpstreamsOnly: `veer demo -upstreams-only` starts every upstream it
// is given (several of one version), on loopback, prints them, makes the
// canary fail its share from the start, and frees the ports when stopped.
func TestUpstreamsOnly(t *testing.T) {
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan []*Upstream, 1)
	done := make(chan error, 1)
	go func() {
		done <- RunUpstreams(ctx, UpstreamsOptions{
			Out: out,
			Upstreams: []UpstreamSpec{
				{"blue", "127.0.0.1:0"}, {"blue", "127.0.0.1:0"}, {"green", "127.0.0.1:0"}, {"canary", "127.0.0.1:0"},
			},
			FailRate: map[string]float64{"canary": 1},
			Started:  func(u []*Upstream) { started <- u },
		})
	}()
	var ups []*Upstream
	select {
	case ups = <-started:
	case err := <-done:
		t.Fatalf("RunUpstreams ended before it started: %v\n%s", err, out)
	case <-time.After(10 * time.Second):
		t.Fatalf("the upstreams did not start in 10s:\n%s", out)
	}
	if len(ups) != 4 {
		t.Fatalf("started %d upstreams, want 4", len(ups))
	}
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(addr string) (int, string) {
		t.Helper()
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("GET %s: %v", addr, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	text := out.String()
	for _, u := range ups {
		if host, _, _ := net.SplitHostPort(u.Addr); host != "127.0.0.1" {
			t.Errorf("%s listens on %s, want loopback", u.Version, u.Addr)
		}
		if !strings.Contains(text, u.Version) || !strings.Contains(text, u.Addr) {
			t.Errorf("output does not list %s at %s:\n%s", u.Version, u.Addr, text)
		}
		code, body := get(u.Addr)
		switch u.Version {
		case "canary":
			if code != 500 {
				t.Errorf("canary with fail rate 100%%: %d %q, want 500", code, body)
			}
		default:
			if code != 200 || body != "hello from "+u.Version+"\n" {
				t.Errorf("%s: %d %q", u.Version, code, body)
			}
		}
	}
	if ups[0].Addr == ups[1].Addr {
		t.Errorf("the two blue upstreams share %s", ups[0].Addr)
	}
	if !strings.Contains(text, "answers 500 to 100% of requests") {
		t.Errorf("output does not say the canary fails:\n%s", text)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunUpstreams after the stop: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstreams did not stop within 5s")
	}
	for _, u := range ups {
		ln, err := net.Listen("tcp", u.Addr)
		if err != nil {
			t.Errorf("port of %s still taken after the stop: %v", u.Addr, err)
			continue
		}
		ln.Close()
	}
}

func TestUpstreamsOnlyRefuses(t *testing.T) {
	err := RunUpstreams(context.Background(), UpstreamsOptions{Out: io.Discard, Upstreams: []UpstreamSpec{{"blue", "0.0.0.0:0"}}})
	if !errors.Is(err, ErrNotLoopback) {
		t.Errorf("off loopback: %v, want ErrNotLoopback", err)
	}
	err = RunUpstreams(context.Background(), UpstreamsOptions{Out: io.Discard, FailRate: map[string]float64{"canary": 1.5}})
	if err == nil {
		t.Errorf("fail rate 150%%: no error")
	}
	// A taken port is an error, and the upstreams already started are closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = RunUpstreams(context.Background(), UpstreamsOptions{Out: io.Discard,
		Upstreams: []UpstreamSpec{{"blue", "127.0.0.1:0"}, {"green", ln.Addr().String()}}})
	if err == nil || !strings.Contains(err.Error(), "green upstream") {
		t.Errorf("taken port: %v, want an error naming the green upstream", err)
	}
}
