// Package notify delivers veer's events (rollbacks, promotions, switches,
// weight changes, reloads, ...) to the webhooks of the config's
// notify.webhooks section.
//
// Delivery is never on the request path: Send only encodes the event and puts
// it on a bounded in-memory queue; a few workers started by Run POST it to each
// receiver, retrying connection errors, 429 and 5xx answers with exponential
// backoff and jitter, honouring a (capped) Retry-After, within an overall
// deadline per delivery. When the queue is full the oldest queued delivery is
// dropped and counted, so a dead receiver can cost events but never memory or
// latency.
package notify

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	randv2 "math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for the zero fields of Options.
const (
	DefaultQueueSize     = 1024
	DefaultMaxAttempts   = 5
	DefaultMinBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff    = 30 * time.Second
	DefaultMaxRetryAfter = 60 * time.Second
	DefaultDeadline      = 2 * time.Minute

	// attemptTimeout bounds one HTTP attempt, from dial to the end of the
	// response headers and body.
	attemptTimeout = 10 * time.Second
	// defaultWorkers is how many deliveries run at once, so that one slow
	// receiver (bounded by the deadline) does not hold up the others.
	defaultWorkers = 4
)

// Webhook is one receiver of events. Events lists the event types it wants
// (rollback, promote, switch, weights, undo, step, reload, reload-failed,
// backend-down, backend-up, ...); empty means every type.
type Webhook struct {
	URL    string
	Events []string
}

// Message is the JSON body POSTed to a webhook. ID is unique per event and is
// also sent as the Idempotency-Key header, so a receiver can discard the
// duplicates that retries may cause.
type Message struct {
	ID       string             `json:"id"`
	Event    string             `json:"event"`
	Route    string             `json:"route"`
	Version  string             `json:"version,omitempty"`
	Before   map[string]float64 `json:"weights_before,omitempty"`
	After    map[string]float64 `json:"weights_after,omitempty"`
	Reason   string             `json:"reason,omitempty"`
	Revision int                `json:"revision,omitempty"`
	Time     time.Time          `json:"time"`
}

// Options tunes a Notifier. Zero (or negative) fields take the defaults
// documented on each field.
type Options struct {
	// QueueSize bounds the deliveries waiting for a worker (default 1024).
	// When it is full the oldest queued delivery is dropped and counted.
	QueueSize int
	// MaxAttempts is the first try plus the retries (default 5).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the exponential backoff with jitter
	// between attempts (defaults 500ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps a receiver's Retry-After (default 60s).
	MaxRetryAfter time.Duration
	// Deadline bounds one delivery including its retries and waits
	// (default 2m). Each attempt also has a 10s timeout.
	Deadline time.Duration
	// Logger receives delivery failures and drops (default: discard).
	Logger *slog.Logger
	// Registerer, if not nil, gets veer_webhook_deliveries_total{result}
	// and veer_webhook_dropped_total.
	Registerer prometheus.Registerer
	// HTTPClient sends the requests (default: a pooled client of its own).
	// It is copied; a zero Timeout becomes the 10s attempt timeout and a nil
	// CheckRedirect becomes "do not follow redirects", because following
	// a 301/302 would turn the POST into a GET and lose the event.
	HTTPClient *http.Client
}

// hook is a Webhook prepared for Send: its event set and its URL as it may be
// logged.
type hook struct {
	url      string
	redacted string
	events   map[string]struct{} // nil: every event
}

func (h *hook) wants(event string) bool {
	if h.events == nil {
		return true
	}
	_, ok := h.events[event]
	return ok
}

// delivery is one message for one hook, waiting in the queue.
type delivery struct {
	hook  *hook
	id    string
	event string
	route string
	body  []byte
}

// Notifier queues events and delivers them to webhooks. It is safe for
// concurrent use and must not be copied; create it with New and start its
// workers with Run.
type Notifier struct {
	hooks atomic.Pointer[[]*hook]

	sendMu sync.Mutex // serialises the drop-oldest dance in enqueue
	queue  chan delivery

	dropped  atomic.Uint64
	log      *slog.Logger
	client   *http.Client
	workers  int
	attempts int
	minWait  time.Duration
	maxWait  time.Duration
	maxRA    time.Duration
	deadline time.Duration

	mDropped prometheus.Counter
	mSuccess prometheus.Counter
	mFailure prometheus.Counter

	// Injected for tests; set before Run and never changed afterwards.
	now           func() time.Time
	jitter        func(n int64) int64 // uniform in [0, n); n > 0
	afterDelivery func(d delivery, ok bool)
}

// New returns a Notifier for hooks. Nothing is delivered until Run is called;
// Send may be called before that and its deliveries wait in the queue.
func New(hooks []Webhook, opts Options) *Notifier {
	n := &Notifier{
		log:      opts.Logger,
		workers:  defaultWorkers,
		attempts: orDefault(opts.MaxAttempts, DefaultMaxAttempts),
		minWait:  orDefault(opts.MinBackoff, DefaultMinBackoff),
		maxWait:  orDefault(opts.MaxBackoff, DefaultMaxBackoff),
		maxRA:    orDefault(opts.MaxRetryAfter, DefaultMaxRetryAfter),
		deadline: orDefault(opts.Deadline, DefaultDeadline),
		queue:    make(chan delivery, orDefault(opts.QueueSize, DefaultQueueSize)),
		now:      time.Now,
		jitter:   randv2.Int64N,
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.maxWait < n.minWait {
		n.maxWait = n.minWait
	}
	n.client = httpClient(opts.HTTPClient)

	deliveries := register(opts.Registerer, n.log, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "veer_webhook_deliveries_total",
		Help: "Webhook deliveries by result; a failure is an event its receiver missed after every retry.",
	}, []string{"result"}))
	n.mSuccess = deliveries.WithLabelValues("success")
	n.mFailure = deliveries.WithLabelValues("failure")
	n.mDropped = register(opts.Registerer, n.log, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "veer_webhook_dropped_total",
		Help: "Webhook deliveries dropped, oldest first, because the queue was full; their receivers missed those events.",
	}))

	n.SetHooks(hooks)
	return n
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func httpClient(c *http.Client) *http.Client {
	var hc http.Client
	if c != nil {
		hc = *c
	} else {
		hc.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if hc.Timeout == 0 {
		hc.Timeout = attemptTimeout
	}
	if hc.CheckRedirect == nil {
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return &hc
}

// register registers c with r, or returns the collector already registered
// under the same description (a second Notifier on one registry shares it).
func register[C prometheus.Collector](r prometheus.Registerer, log *slog.Logger, c C) C {
	if r == nil {
		return c
	}
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		log.Warn("webhook metrics not registered; webhook deliveries will be missing from /metrics", "error", err)
	}
	return c
}

// SetHooks replaces the webhooks, as on a config reload. It is safe for
// concurrent use with Send and Run. Deliveries already queued still go to the
// hook they were queued for.
func (n *Notifier) SetHooks(hooks []Webhook) {
	hs := make([]*hook, 0, len(hooks))
	for _, w := range hooks {
		h := &hook{url: w.URL, redacted: redactURL(w.URL)}
		if len(w.Events) > 0 {
			h.events = make(map[string]struct{}, len(w.Events))
			for _, e := range w.Events {
				h.events[e] = struct{}{}
			}
		}
		hs = append(hs, h)
	}
	n.hooks.Store(&hs)
}

// Send queues m for every webhook whose Events include m.Event, filling m.ID
// if empty and m.Time if zero. It never blocks on delivery: the message is
// encoded at once (so the caller may reuse its maps) and, when the queue is
// full, the oldest queued delivery is dropped to make room. Send is safe for
// concurrent use.
func (n *Notifier) Send(m Message) {
	hooks := *n.hooks.Load()
	var body []byte
	for _, h := range hooks {
		if !h.wants(m.Event) {
			continue
		}
		if body == nil {
			if m.ID == "" {
				m.ID = rand.Text()
			}
			if m.Time.IsZero() {
				m.Time = n.now().UTC()
			}
			var err error
			if body, err = json.Marshal(m); err != nil {
				n.log.Error(fmt.Sprintf("webhook event %s for route %s could not be encoded; no receiver will get it", m.Event, m.Route),
					"id", m.ID, "error", err)
				return
			}
		}
		n.enqueue(delivery{hook: h, id: m.ID, event: m.Event, route: m.Route, body: body})
	}
}

// enqueue puts d on the queue, dropping the oldest queued delivery while the
// queue is full. Only senders hold sendMu, and workers only ever take from
// the queue, so the loop ends after at most a few turns.
func (n *Notifier) enqueue(d delivery) {
	var lost []delivery
	n.sendMu.Lock()
	for {
		select {
		case n.queue <- d:
		default:
			select {
			case old := <-n.queue:
				lost = append(lost, old)
			default: // a worker took one meanwhile; try again
			}
			continue
		}
		break
	}
	n.sendMu.Unlock()
	for _, old := range lost {
		n.dropped.Add(1)
		n.mDropped.Inc()
		n.log.Warn(fmt.Sprintf("webhook queue full (%d); dropped the oldest queued event %s for route %s, its receiver will not get it",
			cap(n.queue), old.event, old.route), "url", old.hook.redacted, "id", old.id)
	}
}

// Dropped reports how many deliveries were dropped because the queue was
// full. It is safe for concurrent use.
func (n *Notifier) Dropped() uint64 { return n.dropped.Load() }

// Run delivers queued messages with a few concurrent workers until ctx is
// done, then returns once every worker has stopped. A delivery in flight
// when ctx ends is abandoned and logged; deliveries still queued are counted
// in one log line and stay queued. Call Run once per Notifier.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range n.workers {
		wg.Go(func() { n.work(ctx) })
	}
	wg.Wait()
	if left := len(n.queue); left > 0 {
		n.log.Warn(fmt.Sprintf("webhook notifier stopped with %d deliveries still queued; their receivers missed those events", left))
	}
}

func (n *Notifier) work(ctx context.Context) {
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case d := <-n.queue:
			n.deliverRecovered(ctx, d)
		}
	}
}

// deliverRecovered runs one delivery, turning a panic (a bug) into a logged,
// counted failure so the worker keeps going.
func (n *Notifier) deliverRecovered(ctx context.Context, d delivery) {
	ok := false
	defer func() {
		if r := recover(); r != nil {
			n.mFailure.Inc()
			n.log.Error(fmt.Sprintf("webhook delivery panicked (a bug in veer); the receiver missed event %s for route %s", d.event, d.route),
				"url", d.hook.redacted, "id", d.id, "panic", fmt.Sprint(r))
		}
		if n.afterDelivery != nil {
			n.afterDelivery(d, ok)
		}
	}()
	ok = n.deliver(ctx, d)
}
