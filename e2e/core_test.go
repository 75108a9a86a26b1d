package e2e

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// coreConfig is one route over three versions: blue (stable) 60, green 30
// and canary (the candidate) 10, sticky on X-User-ID, with the default
// override header and one rule.
func coreConfig(blue, green, canary *Backend) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: shop
    match: {host: shop.example.com}
    stable: blue
    candidate: canary
    versions:
      blue:   {backends: [%q]}
      green:  {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 60, green: 30, canary: 10}
    sticky: {header: X-User-ID}
    rules:
      - {header: X-Beta, equals: "true", version: green}
`, blue.Addr, green.Addr, canary.Addr)
}

// TestCore drives the real binary in front of three real backends: the
// split, sticky keys, the override header, a rule, the headers the
// backends see, and the metrics that account for all of it. The subtests
// share one veer and run in order; served counts every answer by version.
func TestCore(t *testing.T) {
	backends := map[string]*Backend{}
	for _, name := range []string{"blue", "green", "canary"} {
		backends[name] = NewBackend(t, name)
	}
	v := StartVeer(t, coreConfig(backends["blue"], backends["green"], backends["canary"]))
	weights := map[string]int{"blue": 60, "green": 30, "canary": 10}
	served := map[string]int{}
	host := []string{"Host", "shop.example.com"}

	t.Run("split", func(t *testing.T) {
		const n = 3000
		got, err := coreFetchMany(v.ProxyURL()+"/split", n, 8, func(int) []string { return host })
		if err != nil {
			t.Fatal(err)
		}
		// The ring is exact: any multiple of its length (10 slots at
		// 60/30/10) splits exactly as the weights.
		for name, w := range weights {
			want := n * w / 100
			if got[name] != want {
				t.Errorf("%s served %d of %d requests, want %d (weight %d%%)", name, got[name], n, want, w)
			}
			if hits := backends[name].Hits.Load(); hits != int64(want) {
				t.Errorf("%s's backend got %d requests, want %d", name, hits, want)
			}
			served[name] += got[name]
		}
		if len(got) != len(weights) {
			t.Errorf("versions that answered: %v", got)
		}
	})

	t.Run("sticky", func(t *testing.T) {
		const users, perUser = 300, 5
		var mu sync.Mutex
		versionOf := map[string]map[string]bool{}
		got, err := coreFetchEach(v.ProxyURL()+"/sticky", users*perUser, 8, func(i int) []string {
			return append([]string{"X-User-ID", fmt.Sprintf("user-%d", i%users)}, host...)
		}, func(i int, version string) {
			mu.Lock()
			defer mu.Unlock()
			u := fmt.Sprintf("user-%d", i%users)
			if versionOf[u] == nil {
				versionOf[u] = map[string]bool{}
			}
			versionOf[u][version] = true
		})
		if err != nil {
			t.Fatal(err)
		}
		perVersion := map[string]int{}
		for u, vs := range versionOf {
			if len(vs) != 1 {
				t.Errorf("%s was served by %d versions: %v", u, len(vs), vs)
			}
			for name := range vs {
				perVersion[name]++
			}
		}
		// Users spread by the weights, within 4 standard deviations of a
		// binomial over 300 users.
		for name, w := range weights {
			p := float64(w) / 100
			sd := math.Sqrt(users * p * (1 - p))
			if d := math.Abs(float64(perVersion[name]) - users*p); d > 4*sd {
				t.Errorf("%d of %d users on %s, want %.0f ± %.0f", perVersion[name], users, name, users*p, 4*sd)
			}
		}
		for name, n := range got {
			served[name] += n
		}
	})

	t.Run("override", func(t *testing.T) {
		for _, want := range []string{"canary", "green", "blue"} {
			for i := range 20 {
				code, ver, body := Get(t, v.ProxyURL()+"/override", "Host", "shop.example.com",
					"X-Veer-Version", want, "X-User-ID", fmt.Sprintf("u%d", i))
				if code != 200 || ver != want || body != want+"\n" {
					t.Fatalf("X-Veer-Version: %s: status %d, served by %q, body %q", want, code, ver, body)
				}
				served[ver]++
			}
		}
		// An unknown version is ignored: the weights decide.
		code, ver, _ := Get(t, v.ProxyURL()+"/override", "Host", "shop.example.com", "X-Veer-Version", "purple")
		if code != 200 || weights[ver] == 0 {
			t.Errorf("X-Veer-Version: purple: status %d, served by %q", code, ver)
		}
		served[ver]++
	})

	t.Run("rule", func(t *testing.T) {
		for i := range 30 {
			code, ver, _ := Get(t, v.ProxyURL()+"/rule", "Host", "shop.example.com",
				"X-Beta", "true", "X-User-ID", fmt.Sprintf("u%d", i))
			if code != 200 || ver != "green" {
				t.Fatalf("X-Beta: true: status %d, served by %q, want green", code, ver)
			}
			served[ver]++
		}
		code, ver, _ := Get(t, v.ProxyURL()+"/rule", "Host", "shop.example.com", "X-Beta", "false", "X-Veer-Version", "canary")
		if code != 200 || ver != "canary" {
			t.Errorf("X-Beta: false: status %d, served by %q, want the override's canary", code, ver)
		}
		served[ver]++
	})

	t.Run("headers", func(t *testing.T) {
		blue := backends["blue"]
		resp := coreRawRequest(t, v.ProxyAddr, "GET /headers?x=1 HTTP/1.1",
			"Host: shop.example.com",
			"X-Veer-Version: blue",
			"X-Forwarded-For: 203.0.113.9",
			"X-Forwarded-For: 198.51.100.7",
			"X-Forwarded-Proto: https",
			"X-Forwarded-Host: evil.example",
			"Connection: keep-alive, X-Secret",
			"Keep-Alive: timeout=5",
			"Proxy-Connection: keep-alive",
			"TE: trailers",
			"Trailer: X-Checksum",
			"Upgrade: websocket",
			"Proxy-Authorization: Basic dXNlcjpwYXNz",
			"X-Secret: s3cret",
			"X-Kept: yes",
		)
		served["blue"]++
		if resp.StatusCode != 200 || resp.Header.Get("X-Veer-Version") != "blue" {
			t.Fatalf("status %d, X-Veer-Version %q", resp.StatusCode, resp.Header.Get("X-Veer-Version"))
		}
		h, gotHost, uri := blue.Last()
		checks := []struct {
			name string
			got  []string
			want []string
		}{
			{"Host", []string{gotHost}, []string{"shop.example.com"}},
			{"request URI", []string{uri}, []string{"/headers?x=1"}},
			{"X-Forwarded-For", h.Values("X-Forwarded-For"), []string{"127.0.0.1"}},
			{"X-Forwarded-Proto", h.Values("X-Forwarded-Proto"), []string{"http"}},
			{"X-Forwarded-Host", h.Values("X-Forwarded-Host"), []string{"shop.example.com"}},
			{"X-Kept", h.Values("X-Kept"), []string{"yes"}},
		}
		for _, name := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade",
			"Proxy-Authorization", "X-Secret"} {
			checks = append(checks, struct {
				name string
				got  []string
				want []string
			}{name, h.Values(name), nil})
		}
		for _, c := range checks {
			if strings.Join(c.got, "|") != strings.Join(c.want, "|") {
				t.Errorf("%s at the backend = %q, want %q", c.name, c.got, c.want)
			}
		}
		if id := h.Get("X-Request-Id"); len(id) < 16 {
			t.Errorf("X-Request-Id at the backend = %q, want a generated id", id)
		}

		ids := map[string]bool{}
		for range 20 {
			Get(t, v.ProxyURL()+"/headers", "Host", "shop.example.com", "X-Veer-Version", "blue")
			served["blue"]++
			h, _, _ := blue.Last()
			id := h.Get("X-Request-Id")
			if id == "" || ids[id] {
				t.Fatalf("X-Request-Id %q is empty or repeated", id)
			}
			ids[id] = true
		}
		Get(t, v.ProxyURL()+"/headers", "Host", "shop.example.com", "X-Veer-Version", "blue", "X-Request-Id", "client-id-1")
		served["blue"]++
		if h, _, _ := blue.Last(); h.Get("X-Request-Id") != "client-id-1" {
			t.Errorf("X-Request-Id sent by the client arrived as %q", h.Get("X-Request-Id"))
		}
	})

	t.Run("no route", func(t *testing.T) {
		if code, _, _ := Get(t, v.ProxyURL()+"/", "Host", "elsewhere.example.com"); code != 404 {
			t.Errorf("unknown host: status %d, want 404", code)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		mfs := scrape(t, v.AdminURL())
		for name, w := range weights {
			labels := map[string]string{"route": "shop", "version": name}
			if got := coreSample(mfs, "veer_route_weight_percent", labels); got != float64(w) {
				t.Errorf("veer_route_weight_percent{%s} = %v, want %d", name, got, w)
			}
			if got := coreSample(mfs, "veer_request_duration_seconds", labels); got != float64(served[name]) {
				t.Errorf("veer_request_duration_seconds_count{%s} = %v, want %d", name, got, served[name])
			}
			labels["code"] = "2xx"
			if got := coreSample(mfs, "veer_requests_total", labels); got != float64(served[name]) {
				t.Errorf("veer_requests_total{%s,2xx} = %v, want %d", name, got, served[name])
			}
			for _, code := range []string{"3xx", "4xx", "5xx"} {
				labels["code"] = code
				if got := coreSample(mfs, "veer_requests_total", labels); got != 0 {
					t.Errorf("veer_requests_total{%s,%s} = %v, want 0", name, code, got)
				}
			}
			for _, reason := range []string{"connect", "timeout", "reset", "no-backend"} {
				l := map[string]string{"route": "shop", "version": name, "reason": reason}
				if got := coreSample(mfs, "veer_upstream_failures_total", l); got != 0 {
					t.Errorf("veer_upstream_failures_total{%s,%s} = %v, want 0", name, reason, got)
				}
			}
		}
		total := 0
		for name, n := range served {
			total += n
			if hits := backends[name].Hits.Load(); hits != int64(n) {
				t.Errorf("%s's backend got %d requests, veer says it served %d", name, hits, n)
			}
		}
		t.Logf("%d requests: %v", total, served)
	})
}

// coreFetch sends a GET through veer with headers (name, value pairs; "Host"
// sets the Host) and returns the status and the X-Veer-Version that
// served it. Unlike Get it may run on any goroutine.
func coreFetch(url string, headers ...string) (int, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	ver := resp.Header.Get("X-Veer-Version")
	if resp.StatusCode == 200 && string(body) != ver+"\n" {
		return 0, "", fmt.Errorf("X-Veer-Version %q but the body is %q", ver, body)
	}
	return resp.StatusCode, ver, nil
}

// coreFetchMany sends n GETs over workers connections, the headers of the
// i-th from headers(i), and counts the 200s by version. Any other status
// is an error.
func coreFetchMany(url string, n, workers int, headers func(i int) []string) (map[string]int, error) {
	return coreFetchEach(url, n, workers, headers, nil)
}

// coreFetchEach is coreFetchMany calling each(i, version) for every answer.
func coreFetchEach(url string, n, workers int, headers func(i int) []string, each func(i int, version string)) (map[string]int, error) {
	var mu sync.Mutex
	got := map[string]int{}
	var firstErr error
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				code, ver, err := coreFetch(url, headers(i)...)
				if err == nil && code != 200 {
					err = fmt.Errorf("request %d: status %d", i, code)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					got[ver]++
				}
				mu.Unlock()
				if err == nil && each != nil {
					each(i, ver)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return got, firstErr
}

// coreRawRequest writes a request line and header lines to addr as they are
// (net/http would rewrite Connection and friends) and reads the answer.
func coreRawRequest(t *testing.T, addr, requestLine string, headers ...string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	raw := requestLine + "\r\n" + strings.Join(headers, "\r\n") + "\r\n\r\n"
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// coreSample is the value of the sample of family name with exactly labels: a
// counter's or gauge's value, a histogram's count; NaN when there is none.
func coreSample(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	mf := mfs[name]
	if mf == nil {
		return math.NaN()
	}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, lp := range m.GetLabel() {
			if labels[lp.GetName()] != lp.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return math.NaN()
}
