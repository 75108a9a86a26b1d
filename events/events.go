// Package events keeps veer's recent events in a ring and fans them out to
// subscribers (the admin API's Server-Sent Events stream).
package events

import (
	"sync"
	"time"
)

// Event is SPEC's EVENT.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Route   string    `json:"route"`
	Type    string    `json:"type"`
	Message string    `json:"message"`
}

// Log is a bounded ring of events with subscribers. Safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	ring []Event
	next int
	full bool
	seq  uint64
	subs map[chan Event]struct{}
	now  func() time.Time
}

// New returns a log that keeps the last size events (default 1000).
func New(size int, now func() time.Time) *Log {
	if size <= 0 {
		size = 1000
	}
	if now == nil {
		now = time.Now
	}
	return &Log{ring: make([]Event, size), subs: map[chan Event]struct{}{}, now: now}
}

// Add records an event and hands it to every subscriber that has room
// (a slow subscriber misses events rather than slowing veer down).
func (l *Log) Add(route, typ, msg string) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e := Event{Seq: l.seq, Time: l.now().UTC(), Route: route, Type: typ, Message: msg}
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
	for ch := range l.subs {
		select {
		case ch <- e:
		default:
		}
	}
	return e
}

// List returns the kept events, oldest first.
func (l *Log) List() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	if l.full {
		out = append(out, l.ring[l.next:]...)
	}
	return append(out, l.ring[:l.next]...)
}

// Subscribe returns a channel of new events and a function to stop.
func (l *Log) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, 64)
	l.mu.Lock()
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		if _, ok := l.subs[ch]; ok {
			delete(l.subs, ch)
			close(ch)
		}
		l.mu.Unlock()
	}
}
