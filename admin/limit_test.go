package admin

import (
	"fmt"
	"testing"
	"time"
)

// clock is a manual clock for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestLimiterBurstAndRefill(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := newLimiter(2, c.now) // burst 4
	for i := range 4 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("request %d within the burst was refused", i+1)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("over the burst: ok %v wait %v, want refused with a wait of at most 500ms", ok, wait)
	}
	c.advance(500 * time.Millisecond)
	if ok, _ := l.allow("a"); !ok {
		t.Errorf("a token came back after 500ms at 2/s but the request was refused")
	}
	if ok, _ := l.allow("a"); ok {
		t.Errorf("a refused request must not have used a token")
	}
}

func TestLimiterEvictsIdleClients(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := newLimiter(10, c.now)
	for i := range 100 {
		l.allow(fmt.Sprintf("10.0.0.%d", i))
	}
	if n := l.size(); n != 100 {
		t.Fatalf("%d clients remembered, want 100", n)
	}
	c.advance(sweepEvery)
	l.allow("10.0.1.1")
	if n := l.size(); n != 1 {
		t.Errorf("after a sweep %d clients remembered, want only the active one", n)
	}
	// A client still short of tokens is kept: forgetting it would reset it.
	for range 20 {
		l.allow("busy")
	}
	c.advance(sweepEvery)
	l.allow("other")
	if _, ok := l.clients["busy"]; ok {
		t.Errorf("busy client is remembered a minute later, though its bucket refilled")
	}
	c.advance(sweepEvery)
	l.allow("busy")
	l.clients["busy"].AllowN(c.t, 20) // empty right at the sweep
	l.allow("x")
	if _, ok := l.clients["busy"]; !ok {
		t.Errorf("a client with an empty bucket was forgotten")
	}
}

func TestLimiterBoundsClients(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := newLimiter(1, c.now) // burst 2
	for i := range maxClients {
		l.allow(fmt.Sprint(i))
		l.allow(fmt.Sprint(i)) // empty: not idle
	}
	if ok, _ := l.allow("new"); ok {
		t.Errorf("a new client was admitted with the table full of active ones")
	}
	if n := l.size(); n > maxClients {
		t.Errorf("%d clients remembered, more than %d", n, maxClients)
	}
	c.advance(3 * time.Second) // every bucket refills: all idle
	if ok, _ := l.allow("new"); !ok {
		t.Errorf("a new client was refused after the others went idle")
	}
}
