package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitLimit bounds every wait of these tests; nothing should come near it.
const waitLimit = 10 * time.Second

// fast are Options whose backoffs are tiny, so retries do not slow the tests.
func fast(o Options) Options {
	o.MinBackoff, o.MaxBackoff = time.Millisecond, 2*time.Millisecond
	return o
}

// request is what a receiver saw of one delivery attempt.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a webhook on 127.0.0.1 that answers the n-th attempt (from 1)
// with respond(n) and records every attempt.
type receiver struct {
	srv  *httptest.Server
	reqs chan request
	hits atomic.Int32
}

func newReceiver(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, n int)) *receiver {
	t.Helper()
	rc := &receiver{reqs: make(chan request, 20000)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.reqs <- request{header: r.Header.Clone(), body: body}
		respond(w, r, int(rc.hits.Add(1)))
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// statuses answers attempt n with codes[n-1], and 200 after the last.
func statuses(codes ...int) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, n int) {
		if n <= len(codes) {
			w.WriteHeader(codes[n-1])
		}
	}
}

// stuck holds every attempt until release is closed or the client gives up,
// telling entered about each one.
func stuck(t *testing.T, entered chan<- string) func(http.ResponseWriter, *http.Request, int) {
	t.Helper()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(_ http.ResponseWriter, r *http.Request, _ int) {
		if entered != nil {
			entered <- r.Header.Get("Idempotency-Key")
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
}

func (rc *receiver) take(t *testing.T) request {
	t.Helper()
	select {
	case r := <-rc.reqs:
		return r
	case <-time.After(waitLimit):
		t.Fatalf("receiver got no request within %s", waitLimit)
		return request{}
	}
}

type result struct {
	d  delivery
	ok bool
}

// start runs n until the test ends and returns the outcome of every delivery.
func start(t *testing.T, n *Notifier) <-chan result {
	t.Helper()
	results := make(chan result, 20000)
	n.afterDelivery = func(d delivery, ok bool) { results <- result{d, ok} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %s of its context ending", waitLimit)
		}
	})
	return results
}

func next(t *testing.T, results <-chan result) result {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(waitLimit):
		t.Fatalf("no delivery finished within %s", waitLimit)
		return result{}
	}
}

// logBuffer collects log output from concurrent workers.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// counter reads a counter from g; result selects the label, "" none.
func counter(t *testing.T, g prometheus.Gatherer, name, result string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" {
					got = lp.GetValue()
				}
			}
			if got == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{result=%q} not registered", name, result)
	return 0
}

func TestRetriedDeliveryKeepsIdempotencyKeyAndBody(t *testing.T) {
	rc := newReceiver(t, statuses(500, 500))
	reg := prometheus.NewPedanticRegistry()
	n := New([]Webhook{{URL: rc.srv.URL + "/hook"}}, fast(Options{Registerer: reg}))
	results := start(t, n)

	sent := Message{
		Event: "rollback", Route: "shop", Version: "canary",
		Before:   map[string]float64{"blue": 90, "canary": 10},
		After:    map[string]float64{"blue": 100, "canary": 0},
		Reason:   "error rate 8.1% > 5% over 30s, 412 requests",
		Revision: 7,
	}
	n.Send(sent)
	sent.Before["blue"] = -1 // Send must have taken its copy already

	if r := next(t, results); !r.ok {
		t.Fatalf("delivery failed, want success on the third attempt")
	}
	reqs := []request{rc.take(t), rc.take(t), rc.take(t)}
	if got := rc.hits.Load(); got != 3 {
		t.Fatalf("receiver got %d attempts, want 3", got)
	}

	var got Message
	if err := json.Unmarshal(reqs[2].body, &got); err != nil {
		t.Fatalf("body %q: %v", reqs[2].body, err)
	}
	if got.ID == "" || got.Time.IsZero() {
		t.Fatalf("Send did not fill ID and Time: id=%q time=%v", got.ID, got.Time)
	}
	want := sent
	want.Before = map[string]float64{"blue": 90, "canary": 10}
	want.ID, want.Time = got.ID, got.Time
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body = %+v\nwant %+v", got, want)
	}
	var fields map[string]any
	if err := json.Unmarshal(reqs[2].body, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "event", "route", "version", "weights_before", "weights_after", "reason", "revision", "time"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("body has no %q field: %s", k, reqs[2].body)
		}
	}

	for i, r := range reqs {
		if k := r.header.Get("Idempotency-Key"); k != got.ID {
			t.Errorf("attempt %d: Idempotency-Key = %q, want the message ID %q", i+1, k, got.ID)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("attempt %d: Content-Type = %q, want application/json", i+1, ct)
		}
		if ua := r.header.Get("User-Agent"); ua != "veer" {
			t.Errorf("attempt %d: User-Agent = %q, want veer", i+1, ua)
		}
		if !bytes.Equal(r.body, reqs[2].body) {
			t.Errorf("attempt %d: body %s differs from the last attempt's %s", i+1, r.body, reqs[2].body)
		}
	}
	if got := counter(t, reg, "veer_webhook_deliveries_total", "success"); got != 1 {
		t.Errorf("deliveries{result=success} = %v, want 1", got)
	}
	if got := counter(t, reg, "veer_webhook_deliveries_total", "failure"); got != 0 {
		t.Errorf("deliveries{result=failure} = %v, want 0", got)
	}
}

func TestDeliveryOutcomes(t *testing.T) {
	tests := []struct {
		name         string
		codes        []int
		maxAttempts  int
		wantAttempts int32
		wantOK       bool
		wantLog      string
	}{
		{"accepted at once", nil, 5, 1, true, ""},
		{"204 is success", []int{204, 500}, 5, 1, true, ""},
		{"two 503 then accepted", []int{503, 503}, 5, 3, true, ""},
		{"429 is retried", []int{429}, 5, 2, true, ""},
		{"always 500", []int{500, 500, 500, 500}, 3, 3, false,
			"webhook delivery failed after 3 attempts; the receiver missed event rollback for route shop"},
		{"404 is not retried", []int{404}, 5, 1, false,
			"webhook receiver refused the delivery (not retried) after 1 attempt; the receiver missed event rollback for route shop"},
		{"501 is not retried", []int{501}, 5, 1, false, "(not retried) after 1 attempt"},
		{"redirect is not followed", []int{302}, 5, 1, false, "status 302 Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, statuses(tt.codes...))
			log, logs := newLogger()
			reg := prometheus.NewRegistry()
			n := New([]Webhook{{URL: rc.srv.URL}}, fast(Options{MaxAttempts: tt.maxAttempts, Logger: log, Registerer: reg}))
			results := start(t, n)

			n.Send(Message{Event: "rollback", Route: "shop"})
			if r := next(t, results); r.ok != tt.wantOK {
				t.Errorf("delivered = %v, want %v; log:\n%s", r.ok, tt.wantOK, logs)
			}
			if got := rc.hits.Load(); got != tt.wantAttempts {
				t.Errorf("receiver got %d attempts, want %d", got, tt.wantAttempts)
			}
			if tt.wantLog != "" && !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log does not say %q:\n%s", tt.wantLog, logs)
			}
			if !tt.wantOK && !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("failure not logged at Warn:\n%s", logs)
			}
			result := "success"
			if !tt.wantOK {
				result = "failure"
			}
			if got := counter(t, reg, "veer_webhook_deliveries_total", result); got != 1 {
				t.Errorf("deliveries{result=%s} = %v, want 1", result, got)
			}
		})
	}
}

func TestRetryAfterHonouredButCapped(t *testing.T) {
	// The receiver asks for an hour; exponential backoff would also wait
	// an hour. Only the capped Retry-After lets the retry come in time.
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	n := New([]Webhook{{URL: rc.srv.URL}}, Options{
		MinBackoff: time.Hour, MaxBackoff: time.Hour,
		MaxRetryAfter: 5 * time.Millisecond,
	})
	results := start(t, n)

	n.Send(Message{Event: "promote", Route: "shop"})
	if r := next(t, results); !r.ok {
		t.Fatalf("delivery failed, want success after the capped Retry-After")
	}
	if got := rc.hits.Load(); got != 2 {
		t.Errorf("receiver got %d attempts, want 2", got)
	}
}

func TestDeadlineBoundsAStuckReceiver(t *testing.T) {
	rc := newReceiver(t, stuck(t, nil))
	log, logs := newLogger()
	n := New([]Webhook{{URL: rc.srv.URL}}, fast(Options{Deadline: 50 * time.Millisecond, Logger: log}))
	results := start(t, n)

	n.Send(Message{Event: "switch", Route: "shop"})
	if r := next(t, results); r.ok {
		t.Fatalf("delivery to a stuck receiver succeeded")
	}
	want := "webhook delivery gave up at its 50ms deadline after 1 attempt; the receiver missed event switch for route shop"
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log does not say %q:\n%s", want, logs)
	}
}

func TestEventFiltering(t *testing.T) {
	t.Run("wants", func(t *testing.T) {
		tests := []struct {
			name   string
			events []string
			event  string
			want   bool
		}{
			{"empty list takes all", nil, "reload", true},
			{"listed", []string{"rollback", "promote"}, "promote", true},
			{"not listed", []string{"rollback", "promote"}, "weights", false},
			{"no prefix match", []string{"reload"}, "reload-failed", false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				n := New([]Webhook{{URL: "http://127.0.0.1:1/", Events: tt.events}}, Options{})
				if got := (*n.hooks.Load())[0].wants(tt.event); got != tt.want {
					t.Errorf("hook with events %v wants(%q) = %v, want %v", tt.events, tt.event, got, tt.want)
				}
			})
		}
	})

	t.Run("delivered", func(t *testing.T) {
		only := newReceiver(t, statuses())
		all := newReceiver(t, statuses())
		n := New([]Webhook{
			{URL: only.srv.URL, Events: []string{"rollback"}},
			{URL: all.srv.URL},
		}, fast(Options{}))
		for _, e := range []string{"promote", "rollback", "switch"} {
			n.Send(Message{Event: e, Route: "shop"})
		}
		// Nothing runs yet, so the queue holds exactly what Send chose.
		if got := len(n.queue); got != 4 {
			t.Fatalf("queued %d deliveries, want 4 (1 for the rollback-only hook, 3 for the other)", got)
		}
		results := start(t, n)
		for range 4 {
			if r := next(t, results); !r.ok {
				t.Errorf("delivery of %s to %s failed", r.d.event, r.d.hook.redacted)
			}
		}
		events := func(rc *receiver, k int) []string {
			var es []string
			for range k {
				var m Message
				if err := json.Unmarshal(rc.take(t).body, &m); err != nil {
					t.Fatal(err)
				}
				es = append(es, m.Event)
			}
			slices.Sort(es)
			return es
		}
		if got, want := events(only, 1), []string{"rollback"}; !slices.Equal(got, want) {
			t.Errorf("rollback-only hook got %v, want %v", got, want)
		}
		if got, want := events(all, 3), []string{"promote", "rollback", "switch"}; !slices.Equal(got, want) {
			t.Errorf("all-events hook got %v, want %v", got, want)
		}
	})
}

func TestSetHooks(t *testing.T) {
	n := New([]Webhook{{URL: "http://old.example/"}}, Options{})
	n.SetHooks([]Webhook{{URL: "http://new.example/", Events: []string{"reload"}}})
	n.Send(Message{Event: "rollback", Route: "shop"})
	n.Send(Message{Event: "reload"})
	if got := len(n.queue); got != 1 {
		t.Fatalf("queued %d deliveries, want 1", got)
	}
	if d := <-n.queue; d.hook.url != "http://new.example/" || d.event != "reload" {
		t.Errorf("queued %s for %s, want reload for http://new.example/", d.event, d.hook.url)
	}

	t.Run("concurrent with Send", func(t *testing.T) {
		n := New(nil, Options{QueueSize: 8})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 1000 {
				n.SetHooks([]Webhook{{URL: fmt.Sprintf("http://h%d.example/", i)}})
			}
		})
		for range 1000 {
			n.Send(Message{Event: "weights", Route: "shop"})
		}
		wg.Wait()
	})
}

func TestFullQueueDropsOldest(t *testing.T) {
	entered := make(chan string, 100)
	rc := newReceiver(t, stuck(t, entered))
	log, logs := newLogger()
	reg := prometheus.NewRegistry()
	n := New([]Webhook{{URL: rc.srv.URL}}, fast(Options{QueueSize: 2, Logger: log, Registerer: reg}))
	start(t, n)

	// Occupy every worker with a delivery the receiver holds, one at a
	// time so the small queue never overflows here.
	for i := range n.workers {
		n.Send(Message{ID: fmt.Sprintf("busy-%d", i), Event: "step", Route: "shop"})
		select {
		case <-entered:
		case <-time.After(waitLimit):
			t.Fatalf("worker %d did not reach the receiver within %s; log:\n%s", i+1, waitLimit, logs)
		}
	}

	for _, id := range []string{"old", "mid", "new"} {
		n.Send(Message{ID: id, Event: "weights", Route: "shop"})
	}
	if got := n.Dropped(); got != 1 {
		t.Errorf("Dropped() = %d, want 1", got)
	}
	if got := counter(t, reg, "veer_webhook_dropped_total", ""); got != 1 {
		t.Errorf("veer_webhook_dropped_total = %v, want 1", got)
	}
	var queued []string
	for range len(n.queue) {
		d := <-n.queue
		queued = append(queued, d.id)
	}
	if want := []string{"mid", "new"}; !slices.Equal(queued, want) {
		t.Errorf("queue holds %v, want %v (the oldest dropped)", queued, want)
	}
	want := "webhook queue full (2); dropped the oldest queued event weights for route shop"
	if !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), "id=old") {
		t.Errorf("log does not say %q for id old:\n%s", want, logs)
	}
}

func TestSendNeverBlocks(t *testing.T) {
	const sends, queueSize = 10000, 64
	rc := newReceiver(t, stuck(t, nil))
	n := New([]Webhook{{URL: rc.srv.URL}}, fast(Options{QueueSize: queueSize}))
	start(t, n)

	for i := range sends {
		n.Send(Message{Event: "weights", Route: "shop", Revision: i + 1})
	}
	// Every message is queued, dropped, or held by one of the stuck workers
	// (each holds at most one until the 2m deadline).
	dropped, queued := n.Dropped(), uint64(len(n.queue))
	if got := dropped + queued; got < sends-uint64(n.workers) || got > sends {
		t.Errorf("dropped %d + queued %d = %d of %d sends, want within %d of all", dropped, queued, got, sends, n.workers)
	}
	if queued > queueSize {
		t.Errorf("queue holds %d, more than its size %d", queued, queueSize)
	}
}

func TestMetricsSharedAcrossNotifiers(t *testing.T) {
	reg := prometheus.NewRegistry()
	log, logs := newLogger()
	a := New(nil, Options{Registerer: reg, Logger: log})
	b := New(nil, Options{Registerer: reg, Logger: log})
	a.mSuccess.Inc()
	b.mSuccess.Inc()
	if got := counter(t, reg, "veer_webhook_deliveries_total", "success"); got != 2 {
		t.Errorf("deliveries{result=success} = %v, want 2 from two notifiers on one registry", got)
	}
	if strings.Contains(logs.String(), "not registered") {
		t.Errorf("second registration logged an error:\n%s", logs)
	}
}

// panicTransport is a RoundTripper with a bug.
type panicTransport struct{}

func (panicTransport) RoundTrip(*http.Request) (*http.Response, error) { panic("bug") }

func TestPanicInDeliveryIsRecovered(t *testing.T) {
	log, logs := newLogger()
	reg := prometheus.NewRegistry()
	n := New([]Webhook{{URL: "http://127.0.0.1:1/"}}, Options{
		Logger: log, Registerer: reg, HTTPClient: &http.Client{Transport: panicTransport{}},
	})
	results := start(t, n)

	n.Send(Message{Event: "step", Route: "shop"})
	n.Send(Message{Event: "step", Route: "shop"})
	for range 2 { // the worker survived the first panic
		if r := next(t, results); r.ok {
			t.Errorf("a panicking delivery was reported delivered")
		}
	}
	if !strings.Contains(logs.String(), "webhook delivery panicked (a bug in veer); the receiver missed event step for route shop") {
		t.Errorf("panic not logged:\n%s", logs)
	}
	if got := counter(t, reg, "veer_webhook_deliveries_total", "failure"); got != 2 {
		t.Errorf("deliveries{result=failure} = %v, want 2", got)
	}
}

func TestLogsNeverShowURLSecrets(t *testing.T) {
	failing := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(http.StatusBadGateway)
	})
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // connection refused: net/http's error repeats the URL
	tests := []struct {
		name string
		base string
	}{
		{"5xx answers", failing.srv.URL},
		{"connection refused", gone.URL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := strings.Replace(tt.base, "http://", "http://hookuser:s3cretpw@", 1) + "/x?token=t0kenabc#f1ag"
			log, logs := newLogger()
			n := New([]Webhook{{URL: u}}, fast(Options{MaxAttempts: 2, Logger: log}))
			results := start(t, n)

			n.Send(Message{Event: "rollback", Route: "shop"})
			if r := next(t, results); r.ok {
				t.Fatalf("delivery succeeded, want failure")
			}
			out := logs.String()
			want := "webhook delivery failed after 2 attempts; the receiver missed event rollback for route shop"
			if !strings.Contains(out, want) {
				t.Errorf("log does not say %q:\n%s", want, out)
			}
			if !strings.Contains(out, redactURL(u)) {
				t.Errorf("log does not name the hook as %s:\n%s", redactURL(u), out)
			}
			for _, secret := range []string{"hookuser", "s3cretpw", "t0kenabc", "f1ag"} {
				if strings.Contains(out, secret) {
					t.Errorf("log leaks %q:\n%s", secret, out)
				}
			}
		})
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	entered := make(chan string, 100)
	rc := newReceiver(t, stuck(t, entered))
	log, logs := newLogger()
	n := New([]Webhook{{URL: rc.srv.URL}}, fast(Options{Logger: log}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()

	for i := range n.workers {
		n.Send(Message{ID: fmt.Sprintf("busy-%d", i), Event: "rollback", Route: "shop"})
		select {
		case <-entered:
		case <-time.After(waitLimit):
			t.Fatalf("worker %d did not reach the receiver within %s", i+1, waitLimit)
		}
	}
	n.Send(Message{Event: "rollback", Route: "shop"})
	n.Send(Message{Event: "rollback", Route: "shop"})
	cancel()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %s of its context ending", waitLimit)
	}

	out := logs.String()
	if want := "webhook delivery stopped by shutdown; the receiver missed event rollback for route shop"; !strings.Contains(out, want) {
		t.Errorf("log does not say %q:\n%s", want, out)
	}
	if left := len(n.queue); left > 0 {
		if want := fmt.Sprintf("stopped with %d deliveries still queued", left); !strings.Contains(out, want) {
			t.Errorf("log does not say %q:\n%s", want, out)
		}
	}
}
