package gobuild

import (
	"bytes"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// goroot is the GOROOT of the go command on PATH, the one the tests build
// with.
func goroot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	r, err := GoEnv("go", ".", "GOROOT")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readRuntime(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goroot(t), "src", "runtime", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPatchThisGo(t *testing.T) {
	epoll, netpoll := readRuntime(t, "netpoll_epoll.go"), readRuntime(t, "netpoll.go")
	got, err := Patch(epoll, netpoll)
	if err != nil {
		t.Fatalf("Patch on this Go's runtime: %v", err)
	}
	if bytes.Contains(got, []byte(forwardLoop+"\n")) || bytes.Count(got, []byte(backwardLoop)) != 1 {
		t.Fatalf("the loop was not changed exactly once:\n%s", got)
	}
	if d := len(got) - len(epoll); d != len(backwardLoop)-len(forwardLoop) {
		t.Errorf("Patch changed %d bytes more than the loop", d-(len(backwardLoop)-len(forwardLoop)))
	}
	if _, err := parser.ParseFile(token.NewFileSet(), "netpoll_epoll.go", got, 0); err != nil {
		t.Errorf("the changed file does not parse: %v", err)
	}
	// A runtime already changed has no forward loop left: refused, not
	// changed twice.
	if _, err := Patch(got, netpoll); !errors.Is(err, ErrUnknownRuntime) {
		t.Errorf("Patch of a changed file: err = %v, want ErrUnknownRuntime", err)
	}
}

func TestPatchRefusesOtherRuntimes(t *testing.T) {
	loop := forwardLoop + "\n\t\tev := events[i]\n\t}\n"
	push := "func netpollready(toRun *gList) { toRun.push(rg) }\n"
	for _, tc := range []struct {
		name, epoll, netpoll string
	}{
		{"no loop", "func netpoll() {}\n", push},
		{"two loops", loop + loop, push},
		{"netpollready appends instead", loop, "func netpollready(toRun *gList) { toRun.pushBack(rg) }\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out, err := Patch([]byte(tc.epoll), []byte(tc.netpoll)); !errors.Is(err, ErrUnknownRuntime) {
				t.Errorf("err = %v, want ErrUnknownRuntime; out:\n%s", err, out)
			}
		})
	}
	if out, err := Patch([]byte(loop), []byte(push)); err != nil || !strings.Contains(string(out), backwardLoop) {
		t.Errorf("the expected shape: err = %v, out:\n%s", err, out)
	}
}

func TestOverlayErrors(t *testing.T) {
	if _, err := Overlay(t.TempDir(), t.TempDir()); err == nil {
		t.Error("Overlay of a directory with no Go runtime: no error")
	}
	if _, err := GoEnv(filepath.Join(t.TempDir(), "no-go"), ".", "GOROOT"); err == nil {
		t.Error("GoEnv with a missing go command: no error")
	}
}

// TestRunOrder builds testdata/probe with and without the overlay and
// runs both: 32 goroutines whose sockets become ready 0 first, in one
// netpoll batch. Stock Go runs the batch newest first; the overlay's
// runtime oldest first.
func TestRunOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the runtime")
	}
	dir := t.TempDir()
	overlay, err := OverlayFor("go", ".", dir)
	if err != nil {
		t.Fatal(err)
	}
	run := func(extra ...string) []int {
		bin := filepath.Join(dir, "probe")
		args := append([]string{"build", "-o", bin}, extra...)
		if out, err := exec.Command("go", append(args, "./testdata/probe")...).CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", extra, err, out)
		}
		out, err := exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		var order []int
		for _, f := range strings.Fields(strings.Trim(strings.TrimSpace(string(out)), "[]")) {
			i, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("probe printed %q", out)
			}
			order = append(order, i)
		}
		if len(order) != 32 {
			t.Fatalf("probe printed %d numbers, want 32: %q", len(order), out)
		}
		return order
	}
	// up and down count the neighbours in order and in reverse order.
	trend := func(order []int) (up, down int) {
		for i := 1; i < len(order); i++ {
			if order[i] > order[i-1] {
				up++
			} else {
				down++
			}
		}
		return up, down
	}
	stock := run()
	if up, down := trend(stock); down < 3*up {
		t.Errorf("stock Go ran %v: %d in order, %d reversed; want mostly reversed (the order this build changes)", stock, up, down)
	}
	fifo := run("-overlay", overlay)
	if up, down := trend(fifo); up < 3*down {
		t.Errorf("with the overlay ran %v: %d in order, %d reversed; want mostly in order", fifo, up, down)
	}
}
