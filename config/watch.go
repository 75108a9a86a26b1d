package config

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch calls onChange (debounced) whenever the file at path may have
// changed, until ctx ends. It watches the file's directory, not the file, so
// that an in-place write, an editor's rename-save and a Kubernetes ConfigMap
// "..data" symlink swap are all seen (Traefik's provider/file does the
// same). The callback decides whether the content really changed.
func Watch(ctx context.Context, path string, debounce time.Duration, log *slog.Logger, onChange func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		w.Close()
		return err
	}
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	if err := w.Add(dir); err != nil {
		w.Close()
		return err
	}
	// If path is a symlink (ConfigMap), also watch where it points, so that a
	// write through the link is seen.
	real, _ := filepath.EvalSymlinks(abs)
	if real != "" && filepath.Dir(real) != dir {
		_ = w.Add(filepath.Dir(real))
	}
	go func() {
		defer w.Close()
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				name := filepath.Base(ev.Name)
				relevant := name == base || name == "..data" || (real != "" && ev.Name == real)
				if !relevant {
					continue
				}
				if r2, _ := filepath.EvalSymlinks(abs); r2 != "" && r2 != real {
					if filepath.Dir(r2) != dir {
						_ = w.Add(filepath.Dir(r2))
					}
					real = r2
				}
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("config watcher error: changes may be missed until SIGHUP", "err", err)
			case <-fire:
				fire = nil
				if _, err := os.Stat(abs); err == nil {
					onChange()
				}
			}
		}
	}()
	return nil
}
