package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/veer-proxy/veer/events"
)

// streamEvents is GET /api/v1/events/stream: the events as Server-Sent
// Events (https://html.spec.whatwg.org/multipage/server-sent-events.html).
// It sends the kept events first, then live ones as they happen, each as
//
//	id: SEQ
//	event: TYPE
//	data: EVENT-JSON
//
// and a comment line every Heartbeat so that idle proxies keep the stream
// open. A client that reconnects with Last-Event-ID gets only what it
// missed (of what the log still keeps). The stream ends when the client
// goes away. It subscribes before it reads the kept events, so no event
// falls between the two; one delivered by both is sent once. A client too
// slow to drain its subscription misses events rather than slowing veer
// (events.Log's contract); the id gap shows it.
func (s *server) streamEvents(w http.ResponseWriter, r *http.Request) {
	log := s.ctrl.Events()
	live, stop := log.Subscribe()
	defer stop()
	kept := log.List()

	var last uint64
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		last, _ = strconv.ParseUint(id, 10, 64)
		if n := len(kept); n == 0 || kept[n-1].Seq < last {
			last = 0 // veer restarted since: its numbering did too
		}
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx in front: do not buffer the stream
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return // the headers are the whole answer
	}
	rc := http.NewResponseController(w)

	send := func(e events.Event) error {
		if e.Seq <= last {
			return nil
		}
		last = e.Seq
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, data)
		return err
	}
	for _, e := range kept {
		if send(e) != nil {
			return
		}
	}
	if _, err := fmt.Fprint(w, ": veer events: live from here\n\n"); err != nil || rc.Flush() != nil {
		return
	}

	beat := time.NewTicker(s.o.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-live:
			if !ok {
				return
			}
			if send(e) != nil || rc.Flush() != nil {
				return
			}
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
