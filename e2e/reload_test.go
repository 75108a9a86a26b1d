package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func reloadConfig(blue, green *Backend, blueW, greenW int) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
state_file: state.json
routes:
  - name: shop
    stable: blue
    versions:
      blue: {backends: [%q]}
      green: {backends: [%q]}
    weights: {blue: %d, green: %d}
`, blue.Addr, green.Addr, blueW, greenW)
}

// servedBy reports whether the next 20 requests all come from version.
func servedBy(t *testing.T, v *Veer, version string) bool {
	for i := 0; i < 20; i++ {
		if _, ver, _ := Get(t, v.ProxyURL()+"/"); ver != version {
			return false
		}
	}
	return true
}

func TestReloadKinds(t *testing.T) {
	tests := []struct {
		name  string
		flags bool // start with -no-watch
		edit  func(t *testing.T, v *Veer, text string)
	}{
		{name: "in-place write", edit: func(t *testing.T, v *Veer, text string) {
			writeFile(t, v.ConfigPath, text)
		}},
		{name: "editor rename-save", edit: func(t *testing.T, v *Veer, text string) {
			tmp := v.ConfigPath + ".swp"
			writeFile(t, tmp, text)
			if err := os.Rename(tmp, v.ConfigPath); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "SIGHUP", flags: true, edit: func(t *testing.T, v *Veer, text string) {
			writeFile(t, v.ConfigPath, text)
			v.Signal(syscall.SIGHUP)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
			dir := t.TempDir()
			path := filepath.Join(dir, "veer.yaml")
			writeFile(t, path, reloadConfig(blue, green, 100, 0))
			var v *Veer
			if tt.flags {
				v = startVeerArgs(t, dir, path, "-no-watch")
			} else {
				v = StartVeerIn(t, dir, path)
			}
			if !servedBy(t, v, "blue") {
				t.Fatal("not blue at start")
			}
			tt.edit(t, v, reloadConfig(blue, green, 0, 100))
			Eventually(t, 10*time.Second, "green to take the traffic", func() bool { return servedBy(t, v, "green") })
			if got := metricValue(t, v.AdminURL(), "veer_route_revision", "route=shop"); got != 2 {
				t.Errorf("revision = %v, want 2 (one file revision)", got)
			}
			if got := metricValue(t, v.AdminURL(), "veer_config_reloads_total", "result=success"); got != 1 {
				t.Errorf("successful reloads = %v, want 1", got)
			}
		})
	}
}

// TestReloadConfigMapSymlinkSwap swaps a Kubernetes-style ..data symlink.
func TestReloadConfigMapSymlinkSwap(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, "..v1"), 0o755))
	writeFile(t, filepath.Join(dir, "..v1", "veer.yaml"), reloadConfig(blue, green, 100, 0))
	must(os.Symlink("..v1", filepath.Join(dir, "..data")))
	must(os.Symlink(filepath.Join("..data", "veer.yaml"), filepath.Join(dir, "veer.yaml")))
	v := StartVeerIn(t, dir, filepath.Join(dir, "veer.yaml"))
	if !servedBy(t, v, "blue") {
		t.Fatal("not blue at start")
	}
	must(os.Mkdir(filepath.Join(dir, "..v2"), 0o755))
	writeFile(t, filepath.Join(dir, "..v2", "veer.yaml"), reloadConfig(blue, green, 0, 100))
	must(os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	Eventually(t, 10*time.Second, "green after the symlink swap", func() bool { return servedBy(t, v, "green") })
}

// TestReloadInvalidAndUnchanged: a broken file changes nothing and says why
// with FILE:LINE; rewriting the same content makes no revision.
func TestReloadInvalidAndUnchanged(t *testing.T) {
	blue, green := NewBackend(t, "blue"), NewBackend(t, "green")
	text := reloadConfig(blue, green, 100, 0)
	v := StartVeer(t, text)
	broken := strings.Replace(text, "weights: {blue: 100, green: 0}", "weights: {blue: 100, green: 10}", 1)
	writeFile(t, v.ConfigPath, broken)
	Eventually(t, 10*time.Second, "the failed reload to be counted", func() bool {
		return metricValue(t, v.AdminURL(), "veer_config_reloads_total", "result=failure") == 1
	})
	if !servedBy(t, v, "blue") {
		t.Error("the old config stopped serving after an invalid reload")
	}
	if want := v.ConfigPath + ":11: weights total 110"; !strings.Contains(v.Log(), want) {
		t.Errorf("log does not say %q:\n%s", want, v.Log())
	}
	// Back to the original content, then rewrite it unchanged.
	writeFile(t, v.ConfigPath, text)
	Eventually(t, 10*time.Second, "the good reload", func() bool {
		return metricValue(t, v.AdminURL(), "veer_config_reloads_total", "result=success") == 1
	})
	writeFile(t, v.ConfigPath, text)
	time.Sleep(700 * time.Millisecond) // past the 200ms debounce: nothing may happen
	if got := metricValue(t, v.AdminURL(), "veer_config_reloads_total", "result=success"); got != 1 {
		t.Errorf("unchanged rewrite reloaded: %v successes", got)
	}
	if got := metricValue(t, v.AdminURL(), "veer_route_revision", "route=shop"); got != 1 {
		t.Errorf("revision = %v, want still 1", got)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
