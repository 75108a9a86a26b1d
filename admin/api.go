package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/veer-proxy/veer/events"
	"github.com/veer-proxy/veer/rollout"
	"github.com/veer-proxy/veer/state"
)

// requestError is a problem with the request itself (its body or query).
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// decode reads r's JSON body into dst: one JSON value, no unknown fields,
// at most 1 MiB. An empty body is accepted when optional (dst is left as
// it is); example shows the expected body in messages.
func decode(w http.ResponseWriter, r *http.Request, dst any, optional bool, example string) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				err = errors.New("more than one JSON value")
			}
		}
	}
	var (
		maxErr  *http.MaxBytesError
		synErr  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) && optional:
		return nil
	case errors.Is(err, io.EOF):
		return badRequest("a JSON body is required, e.g. %s", example)
	case errors.As(err, &maxErr):
		return badRequest("request body is larger than %d bytes (1 MiB)", maxErr.Limit)
	case errors.As(err, &synErr):
		return badRequest("invalid JSON at byte %d: %s; expected e.g. %s", synErr.Offset, strings.TrimPrefix(synErr.Error(), "json: "), example)
	case errors.As(err, &typeErr):
		want := typeErr.Type.Kind().String()
		switch typeErr.Type.Kind() {
		case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int64:
			want = "a number"
		case reflect.Map, reflect.Struct:
			want = "a JSON object"
		}
		field := typeErr.Field
		if field == "" {
			field = "the body"
		}
		return badRequest("%s must be %s, not %s; expected e.g. %s", field, want, typeErr.Value, example)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("invalid JSON: the body ends too early; expected e.g. %s", example)
	}
	return badRequest("invalid JSON body: %s; expected e.g. %s", strings.TrimPrefix(err.Error(), "json: "), example)
}

// changeResponse answers every mutation.
type changeResponse struct {
	Route    rollout.RouteView `json:"route"`
	Revision state.Revision    `json:"revision"`
	Changed  bool              `json:"changed"`
}

// answerChange answers a mutation of route name: the route as it is now,
// the revision the call left it at and whether the call changed anything.
// The route view is read after the change, so a concurrent change of the
// same route may show in it (the revision is this call's).
func (s *server) answerChange(w http.ResponseWriter, r *http.Request, op, name string, res rollout.Result, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	view, err := s.ctrl.Route(name)
	if err != nil {
		s.fail(w, err)
		return
	}
	if res.Changed {
		s.log.Info("admin API change", "op", op, "route", name, "revision", res.Revision.Revision, "client", clientIP(r))
	}
	writeJSON(w, http.StatusOK, changeResponse{Route: view, Revision: res.Revision, Changed: res.Changed})
}

func (s *server) listRoutes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Routes []rollout.RouteView `json:"routes"`
	}{s.ctrl.Routes()})
}

func (s *server) getRoute(w http.ResponseWriter, r *http.Request) {
	v, err := s.ctrl.Route(r.PathValue("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) setWeights(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Weights map[string]float64 `json:"weights"`
	}
	if err := decode(w, r, &body, false, `{"weights": {"blue": 90, "canary": 10}}`); err != nil {
		s.fail(w, err)
		return
	}
	name := r.PathValue("name")
	res, err := s.ctrl.SetWeights(name, body.Weights, who(r))
	s.answerChange(w, r, "weights", name, res, err)
}

func (s *server) switchVersion(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Version string `json:"version"`
	}
	const example = `{"version": "green"}`
	if err := decode(w, r, &body, false, example); err != nil {
		s.fail(w, err)
		return
	}
	if body.Version == "" {
		s.fail(w, badRequest("version is required, e.g. %s", example))
		return
	}
	name := r.PathValue("name")
	res, err := s.ctrl.Switch(name, body.Version, who(r))
	s.answerChange(w, r, "switch", name, res, err)
}

func (s *server) promote(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Version string `json:"version"`
	}
	if err := decode(w, r, &body, true, `{"version": "canary"} or {}`); err != nil {
		s.fail(w, err)
		return
	}
	name := r.PathValue("name")
	res, err := s.ctrl.Promote(name, body.Version, who(r))
	s.answerChange(w, r, "promote", name, res, err)
}

// noBody accepts an empty body or {}.
func noBody(w http.ResponseWriter, r *http.Request) error {
	var body struct{}
	return decode(w, r, &body, true, "no body or {}")
}

func (s *server) rollback(w http.ResponseWriter, r *http.Request) {
	if err := noBody(w, r); err != nil {
		s.fail(w, err)
		return
	}
	name := r.PathValue("name")
	res, err := s.ctrl.Rollback(name, who(r))
	s.answerChange(w, r, "rollback", name, res, err)
}

func (s *server) pause(w http.ResponseWriter, r *http.Request) {
	if err := noBody(w, r); err != nil {
		s.fail(w, err)
		return
	}
	name := r.PathValue("name")
	res, err := s.ctrl.Pause(name, who(r))
	s.answerChange(w, r, "pause", name, res, err)
}

func (s *server) resume(w http.ResponseWriter, r *http.Request) {
	if err := noBody(w, r); err != nil {
		s.fail(w, err)
		return
	}
	name := r.PathValue("name")
	res, err := s.ctrl.Resume(name, who(r))
	s.answerChange(w, r, "resume", name, res, err)
}

func (s *server) history(w http.ResponseWriter, r *http.Request) {
	revs, err := s.ctrl.History(r.PathValue("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if revs == nil {
		revs = []state.Revision{}
	}
	writeJSON(w, http.StatusOK, struct {
		Revisions []state.Revision `json:"revisions"`
	}{revs})
}

func (s *server) undo(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Revision *int `json:"revision"`
	}
	if err := decode(w, r, &body, true, `{"revision": 3} or {}`); err != nil {
		s.fail(w, err)
		return
	}
	n := 0 // the one before the current
	if body.Revision != nil {
		if *body.Revision < 1 {
			s.fail(w, badRequest("revision must be 1 or more (leave it out for the one before the current), not %d", *body.Revision))
			return
		}
		n = *body.Revision
	}
	name := r.PathValue("name")
	res, err := s.ctrl.Undo(name, n, who(r))
	s.answerChange(w, r, "undo", name, res, err)
}

// listEvents is GET /api/v1/events: the kept events, newest last;
// ?route=NAME keeps one route's (and global ones such as reloads are
// dropped), ?limit=N the newest N.
func (s *server) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			s.fail(w, badRequest("limit must be a whole number of events, not %q", l))
			return
		}
		limit = n
	}
	all := s.ctrl.Events().List()
	out := make([]events.Event, 0, len(all))
	route, byRoute := q.Get("route"), q.Has("route")
	for _, e := range all {
		if !byRoute || e.Route == route {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	writeJSON(w, http.StatusOK, struct {
		Events []events.Event `json:"events"`
	}{out})
}

func (s *server) configInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.ctrl.ConfigInfo())
}
