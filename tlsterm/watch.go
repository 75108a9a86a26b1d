package tlsterm

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher watches the directories of a store's files (not the files, so
// that in-place writes, rename-saves and Kubernetes Secret "..data" symlink
// swaps are all seen, as config.Watch does) and calls reload, debounced.
type watcher struct {
	w    *fsnotify.Watcher
	mu   sync.Mutex
	dirs map[string]bool
	// names are the base names and resolved paths that matter.
	names map[string]bool
}

// Watch re-reads the certificate files, debounced, whenever they may have
// changed, until ctx ends. See Reload for what a change does.
func (s *Store) Watch(ctx context.Context, debounce time.Duration) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	w := &watcher{w: fw, dirs: map[string]bool{}}
	s.mu.Lock()
	pairs := make([]Pair, len(s.entries))
	for i, e := range s.entries {
		pairs[i] = e.pair
	}
	w.set(pairs)
	s.watch = w
	s.mu.Unlock()
	go func() {
		defer fw.Close()
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				if timer != nil {
					timer.Stop()
				}
				return
			case ev, ok := <-fw.Events:
				if !ok {
					return
				}
				if !w.relevant(ev.Name) {
					continue
				}
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case err, ok := <-fw.Errors:
				if !ok {
					return
				}
				s.log.Warn("certificate watcher error: changes may be missed until SIGHUP", "err", err)
			case <-fire:
				fire = nil
				_ = s.Reload() // logs what it could not load
				s.mu.Lock()
				pairs := make([]Pair, len(s.entries))
				for i, e := range s.entries {
					pairs[i] = e.pair
				}
				s.mu.Unlock()
				w.set(pairs) // a symlink may point somewhere new
			}
		}
	}()
	return nil
}

// set watches the directories of pairs' files and of what they link to.
func (w *watcher) set(pairs []Pair) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.names = map[string]bool{"..data": true}
	for _, p := range pairs {
		for _, f := range []string{p.CertFile, p.KeyFile} {
			abs, err := filepath.Abs(f)
			if err != nil {
				continue
			}
			w.names[filepath.Base(abs)] = true
			w.add(filepath.Dir(abs))
			if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
				w.names[real] = true
				w.add(filepath.Dir(real))
			}
		}
	}
}

func (w *watcher) add(dir string) {
	if w.dirs[dir] {
		return
	}
	if err := w.w.Add(dir); err == nil {
		w.dirs[dir] = true
	}
}

func (w *watcher) relevant(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.names[filepath.Base(name)] || w.names[name]
}
