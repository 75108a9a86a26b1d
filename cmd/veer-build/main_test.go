package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseBuild builds veer the release way and checks that the binary
// is veer: it validates example.yaml.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds veer and the runtime")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	bin := filepath.Join(t.TempDir(), "veer")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-o", bin, "-C", "../.."}, &stdout, &stderr); code != 0 {
		t.Fatalf("veer-build exited %d: %s", code, stderr.String())
	}
	if want := bin + " (netpoll in readiness order)\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	out, err := exec.Command(bin, "validate", "-config", "../../example.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("veer validate example.yaml: %v\n%s", err, out)
	}
	// Static: CGO_ENABLED=0.
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath=true"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("go version -m: no %s in\n%s", want, info)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-nope"}, {"extra"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("veer-build %v: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "usage: go run ./cmd/veer-build") {
			t.Errorf("veer-build %v: no usage in %q", args, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-o", filepath.Join(t.TempDir(), "veer"), "-go", filepath.Join(t.TempDir(), "no-go")}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "no-go env GOOS") {
		t.Errorf("a go command that is not there: exit %d, stderr %q", code, stderr.String())
	}
}

// fakeGo writes a go command that answers go env from its arguments'
// table and records a build's arguments in FILE.args, so that veer-build's
// choices can be checked without compiling.
func fakeGo(t *testing.T, goos, goroot string) (goBin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	goBin, argsFile = filepath.Join(dir, "go"), filepath.Join(dir, "args")
	script := "#!/bin/sh\ncase \"$1 $2\" in\n" +
		"'env GOOS') echo " + goos + ";;\n" +
		"'env GOROOT') echo " + goroot + ";;\n" +
		"build*) echo \"$@\" > " + argsFile + ";;\n" +
		"*) exit 3;;\nesac\n"
	if err := os.WriteFile(goBin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goBin, argsFile
}

func TestOtherSystemsBuildStock(t *testing.T) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skip("no go command on PATH")
	}
	for _, tc := range []struct {
		goos, wantWhat string
		overlay        bool
	}{
		{"linux", "(netpoll in readiness order)", true},
		{"darwin", "(stock Go runtime: the change is to Linux's netpoll, and GOOS is darwin)", false},
	} {
		goBin, argsFile := fakeGo(t, tc.goos, strings.TrimSpace(string(goroot)))
		bin := filepath.Join(t.TempDir(), "veer")
		var stdout, stderr bytes.Buffer
		if code := run([]string{"-o", bin, "-go", goBin}, &stdout, &stderr); code != 0 {
			t.Fatalf("GOOS=%s: exit %d: %s", tc.goos, code, stderr.String())
		}
		if want := bin + " " + tc.wantWhat + "\n"; stdout.String() != want {
			t.Errorf("GOOS=%s: stdout %q, want %q", tc.goos, stdout.String(), want)
		}
		args, err := os.ReadFile(argsFile)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(args), "-overlay"); got != tc.overlay {
			t.Errorf("GOOS=%s: go %s: -overlay there = %v, want %v", tc.goos, args, got, tc.overlay)
		}
	}
}

// A Go whose runtime is not the one the change expects (here: none at
// all) is refused, with the way out named.
func TestUnknownRuntimeRefused(t *testing.T) {
	goBin, argsFile := fakeGo(t, "linux", t.TempDir())
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-o", filepath.Join(t.TempDir(), "veer"), "-go", goBin}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "-stock builds without the change") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if _, err := os.Stat(argsFile); err == nil {
		t.Error("veer-build ran go build after refusing the runtime")
	}
	stdout.Reset()
	if code := run([]string{"-o", filepath.Join(t.TempDir(), "veer"), "-go", goBin, "-stock"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "(stock Go runtime)") {
		t.Errorf("-stock: exit %d, stdout %q", code, stdout.String())
	}
}
