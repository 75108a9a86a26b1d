// Package state is veer's durable memory: every route's numbered revisions
// and rollout progress, written atomically to the state file on every change
// and restored on start, so a rollback survives a restart.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Sources of a revision (SPEC).
const (
	SourceFile         = "file"
	SourceAdmin        = "admin"
	SourceAutoRollback = "auto-rollback"
	SourceStep         = "step"
	SourceUndo         = "undo"
)

// Revision is SPEC's REVISION: one change of a route's weights or stable.
type Revision struct {
	Revision int                `json:"revision"`
	Time     time.Time          `json:"time"`
	Weights  map[string]float64 `json:"weights"`
	Stable   string             `json:"stable"`
	Source   string             `json:"source"`
	Reason   string             `json:"reason"`
}

// Route is what veer remembers of one route.
type Route struct {
	Revisions []Revision `json:"revisions"` // oldest first; the last is current
	// FileWeights and FileStable are what the config file said at the last
	// reload: a reload makes a file revision only when the file changes them.
	FileWeights map[string]float64 `json:"file_weights"`
	FileStable  string             `json:"file_stable"`
	// RolledBack maps a version the automatic rollback took out to the reason.
	RolledBack map[string]string `json:"rolled_back,omitempty"`
	// Frozen is set by `action: freeze`: the rollout holds until someone acts.
	Frozen string `json:"frozen,omitempty"`
	// PreviousStable is the rollback target after a blue-green switch.
	PreviousStable string `json:"previous_stable,omitempty"`
	// Drain maps versions a switch or promote took to 0 to the end of their
	// cookie sessions' drain.
	Drain map[string]time.Time `json:"drain,omitempty"`
	// Stepped rollout progress.
	Step        int           `json:"step"`                  // index of the current step; len(steps) = done
	StepStarted time.Time     `json:"step_started,omitzero"` // when the current step began
	Paused      bool          `json:"paused,omitempty"`      // held by `veer pause` or a {} pause
	PausedAt    time.Time     `json:"paused_at,omitzero"`    // when the hold began
	PausedFor   time.Duration `json:"paused_for,omitempty"`  // held time not counted in the current step
	StepsDone   bool          `json:"steps_done,omitempty"`  // the rollout finished (or was aborted)
	StepsKey    string        `json:"steps_key,omitempty"`   // the steps' identity: a new list restarts
}

// Current returns the latest revision (the zero Revision when none).
func (r *Route) Current() Revision {
	if len(r.Revisions) == 0 {
		return Revision{}
	}
	return r.Revisions[len(r.Revisions)-1]
}

// MaxRevisions is how many revisions a route keeps; older ones are dropped
// (their numbers are never reused).
const MaxRevisions = 500

// Append adds rev as the next revision and returns it numbered.
func (r *Route) Append(rev Revision) Revision {
	rev.Revision = r.Current().Revision + 1
	r.Revisions = append(r.Revisions, rev)
	if len(r.Revisions) > MaxRevisions {
		r.Revisions = append([]Revision(nil), r.Revisions[len(r.Revisions)-MaxRevisions:]...)
	}
	return rev
}

// State is the whole file.
type State struct {
	Format int               `json:"format"`
	Routes map[string]*Route `json:"routes"`
}

// New returns an empty state.
func New() *State { return &State{Format: 1, Routes: map[string]*Route{}} }

// Load reads the state file. A missing file is an empty state. An unreadable
// or corrupt file never stops veer and is never silently lost: it is moved
// aside as PATH.corrupt-TIMESTAMP, logged, and an empty state is returned.
func Load(path string, now time.Time, log *slog.Logger) *State {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return New()
	}
	var s State
	if err == nil {
		err = json.Unmarshal(data, &s)
		if err == nil && s.Format != 1 {
			err = fmt.Errorf("unknown state format %d", s.Format)
		}
	}
	if err != nil {
		aside := fmt.Sprintf("%s.corrupt-%s", path, now.UTC().Format("20060102T150405Z"))
		if rerr := os.Rename(path, aside); rerr != nil {
			log.Error("state file is unreadable and could not be moved aside; starting from the config, and the file will be overwritten on the next change",
				"file", path, "err", err, "rename_err", rerr)
		} else {
			log.Error("state file is unreadable: moved it aside and starting from the config; earlier revisions and rollbacks are in the moved file",
				"file", path, "moved_to", aside, "err", err)
		}
		return New()
	}
	if s.Routes == nil {
		s.Routes = map[string]*Route{}
	}
	return &s
}

// Save writes s to path atomically: a temporary file in the same directory,
// fsync, rename over path, fsync the directory. A crash leaves either the
// old file or the new one, never a mix.
func Save(path string, s *State) error {
	data, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return fmt.Errorf("state: encode: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("state: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
