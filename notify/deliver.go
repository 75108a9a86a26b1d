package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// maxDrain is how much of a response body is read so the connection can be
// reused; the rest is discarded with the connection.
const maxDrain = 64 << 10

// attemptLog is what one delivery learnt about its attempts, for the log line
// that tells the operator why a receiver missed an event.
type attemptLog struct {
	attempts int
	last     string // the last attempt's status or error, redacted
}

// deliver POSTs d to its hook with retryablehttp and reports whether the
// receiver accepted it (2xx). It logs a failure at Warn and counts both
// outcomes.
func (n *Notifier) deliver(ctx context.Context, d delivery) bool {
	dctx, cancel := context.WithTimeout(ctx, n.deadline)
	defer cancel()

	var al attemptLog
	status, err := n.post(dctx, d, &al)
	if err == nil && status/100 == 2 {
		n.mSuccess.Inc()
		n.log.Debug("webhook delivered", "event", d.event, "route", d.route, "url", d.hook.redacted, "id", d.id, "attempts", al.attempts)
		return true
	}
	n.mFailure.Inc()

	var what string
	switch {
	case ctx.Err() != nil:
		what = "webhook delivery stopped by shutdown"
	case errors.Is(dctx.Err(), context.DeadlineExceeded):
		what = fmt.Sprintf("webhook delivery gave up at its %s deadline after %s", n.deadline, plural(al.attempts, "attempt"))
	case err == nil: // a status that is not retried, such as 400 or 404
		what = fmt.Sprintf("webhook receiver refused the delivery (not retried) after %s", plural(al.attempts, "attempt"))
	default:
		what = fmt.Sprintf("webhook delivery failed after %s", plural(al.attempts, "attempt"))
	}
	last := al.last
	if last == "" && err != nil {
		last = redactError(err, d.hook.url)
	}
	n.log.Warn(fmt.Sprintf("%s; the receiver missed event %s for route %s", what, d.event, d.route),
		"url", d.hook.redacted, "id", d.id, "last", last)
	return false
}

// post sends d with retries and returns the final status code. Every
// response body is drained and closed here.
func (n *Notifier) post(ctx context.Context, d delivery, al *attemptLog) (int, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, d.hook.url, d.body)
	if err != nil {
		return 0, fmt.Errorf("notify: bad webhook request: %s", redactError(err, d.hook.url))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "veer")
	req.Header.Set("Idempotency-Key", d.id)

	c := &retryablehttp.Client{
		HTTPClient: n.client,
		// nil disables retryablehttp's own logging: it would print the
		// URL's query (tokens) on every retry. We log once, redacted.
		Logger:       nil,
		RetryWaitMin: n.minWait,
		RetryWaitMax: n.maxWait,
		RetryMax:     n.attempts - 1,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			al.attempts++
			switch {
			case err != nil:
				al.last = redactError(err, d.hook.url)
			case resp != nil:
				al.last = "status " + resp.Status
			}
			return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		},
		Backoff: n.backoff,
		ErrorHandler: func(resp *http.Response, err error, _ int) (*http.Response, error) {
			if resp != nil {
				drain(resp.Body)
			}
			if err == nil {
				err = errors.New("notify: retries exhausted")
			}
			return nil, err
		},
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	drain(resp.Body)
	return resp.StatusCode, nil
}

func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrain))
	_ = body.Close()
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// backoff is the retryablehttp.Backoff: the receiver's Retry-After when it
// sent one (capped at MaxRetryAfter, so a receiver cannot park a worker for
// an hour), else exponential backoff with jitter between lo and hi.
func (n *Notifier) backoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), n.now()); ok {
			return min(d, n.maxRA)
		}
	}
	return expJitter(lo, hi, attempt, n.jitter)
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP-date
// (RFC 9110, section 10.2.3). A date in the past means no wait.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if err != nil || secs > math.MaxInt64/uint64(time.Second) {
			return math.MaxInt64, true
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// expJitter is exponential backoff with "equal jitter" (AWS Architecture
// Blog, "Exponential Backoff And Jitter",
// https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
// the ceiling doubles from 2*lo per retry up to hi, and the wait is uniform
// in [ceiling/2, ceiling], never below lo. attempt counts retries from 0.
// rnd returns a uniform value in [0, n).
func expJitter(lo, hi time.Duration, attempt int, rnd func(int64) int64) time.Duration {
	if hi < lo {
		hi = lo
	}
	ceiling := lo
	for i := 0; i <= attempt && ceiling < hi; i++ {
		if ceiling > hi/2 {
			ceiling = hi
			break
		}
		ceiling *= 2
	}
	floor := max(ceiling/2, lo)
	return floor + time.Duration(rnd(int64(ceiling-floor)+1))
}
