package main

import (
	"bytes"
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
	if code := run([]string{"-o", filepath.Join(t.TempDir(), "veer"), "-go", filepath.Join(t.TempDir(), "no-go")}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "-stock builds without the change") {
		t.Errorf("a go command that is not there: exit %d, stderr %q", code, stderr.String())
	}
}
