package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runVeerCLI runs the veer binary with args and env (NAME=VALUE), without
// the caller's $VEER_ADMIN and $VEER_ADMIN_TOKEN, and returns its exit
// code, stdout and stderr.
func runVeerCLI(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(veerBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VEER_ADMIN=") && !strings.HasPrefix(kv, "VEER_ADMIN_TOKEN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("veer %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// cliConfig has shop (blue/green, a blue-green switch) and steps (a
// stepped rollout that stops at a one-hour pause).
func cliConfig(blue, green, canary *Backend, adminExtra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0%s}
routes:
  - name: shop
    stable: blue
    versions:
      blue:  {backends: [%q]}
      green: {backends: [%q]}
    weights: {blue: 100, green: 0}
  - name: steps
    match: {path_prefix: /steps}
    stable: blue
    candidate: canary
    versions:
      blue:   {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 100, canary: 0}
    steps: [{set_weight: 20}, {pause: 1h}]
`, adminExtra, blue.Addr, green.Addr, blue.Addr, canary.Addr)
}

// tableRow finds the line of a table whose fields start with prefix.
func tableRow(out string, prefix ...string) []string {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(prefix) && strings.Join(f[:len(prefix)], " ") == strings.Join(prefix, " ") {
			return f
		}
	}
	return nil
}

func TestCLICommands(t *testing.T) {
	blue, green, canary := NewBackend(t, "blue"), NewBackend(t, "green"), NewBackend(t, "canary")
	v := StartVeer(t, cliConfig(blue, green, canary, ""))
	env := []string{"VEER_ADMIN=" + v.AdminURL()}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runVeerCLI(t, env, args...)
	}
	// The steps route reaches its pause (step 2/2) once the controller ran.
	Eventually(t, 5*time.Second, "the stepped rollout to reach its pause", func() bool {
		_, out, _ := cli("status", "steps")
		return strings.Contains(out, "step 2/2")
	})
	// Some traffic, so that status has figures.
	for range 10 {
		Get(t, v.ProxyURL()+"/")
	}

	t.Run("status", func(t *testing.T) {
		code, out, errOut := cli("status")
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		if h := tableRow(out, "ROUTE"); strings.Join(h, " ") != "ROUTE VERSION WEIGHT REQUESTS ERR% P99 HEALTHY PHASE REVISION" {
			t.Errorf("header = %q\n%s", h, out)
		}
		want := map[string]string{ // route version → the row's fields from WEIGHT on, without the live figures
			"shop blue*":   "100% 1/1 stable 1",
			"shop green":   "0% 1/1 stable 1",
			"steps blue*":  "80% 1/1 progressing 2",
			"steps canary": "20% 1/1 progressing 2",
		}
		for key, w := range want {
			row := tableRow(out, strings.Fields(key)...)
			if len(row) != 9 {
				t.Errorf("no 9-column row for %s:\n%s", key, out)
				continue
			}
			if got := strings.Join([]string{row[2], row[6], row[7], row[8]}, " "); got != w {
				t.Errorf("%s: %q, want %q", key, got, w)
			}
		}
		if row := tableRow(out, "shop", "blue*"); len(row) == 9 && (row[3] != "10" || row[4] != "0%" || !regexp.MustCompile(`^[0-9.]+(µs|ms|s)$`).MatchString(row[5])) {
			t.Errorf("shop blue figures: requests %s err %s p99 %s, want 10, 0%%, a duration", row[3], row[4], row[5])
		}
		if !strings.Contains(out, "steps: step 2/2: pause 1h") {
			t.Errorf("status does not show the current step:\n%s", out)
		}
	})

	t.Run("status -o json", func(t *testing.T) {
		code, out, _ := cli("status", "-o", "json")
		var got struct {
			Routes []struct{ Name string } `json:"routes"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got.Routes) != 2 {
			t.Errorf("exit %d, output %s", code, out)
		}
		code, out, _ = cli("status", "shop", "-o", "json")
		var one struct{ Name, Stable string }
		if code != 0 || json.Unmarshal([]byte(out), &one) != nil || one.Name != "shop" || one.Stable != "blue" {
			t.Errorf("status shop -o json: exit %d, output %s", code, out)
		}
	})

	steps := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // a line of stdout
		wantErr  string // in stderr
	}{
		{"weights", []string{"weights", "shop", "blue=90", "green=10"}, 0, "shop: revision 2 (admin): blue=90 green=10", ""},
		{"weights unchanged", []string{"weights", "shop", "blue=90", "green=10"}, 0, "shop: unchanged at revision 2", ""},
		{"weights not 100", []string{"weights", "shop", "blue=90", "green=20"}, 1, "", "veer weights: weights total 110, they must total 100"},
		{"weights malformed", []string{"weights", "shop", "blue:90"}, 2, "", `"blue:90" is not VERSION=PCT`},
		{"weights not numeric", []string{"weights", "shop", "blue=most"}, 2, "", "is not a number"},
		{"weights no pairs", []string{"weights", "shop"}, 2, "", "wrong number of arguments"},
		{"weights unknown route", []string{"weights", "nope", "blue=100"}, 1, "", `no route "nope"`},
		{"switch", []string{"switch", "shop", "green"}, 0, "shop: revision 3 (admin): blue=0 green=100", ""},
		{"switch again", []string{"switch", "shop", "green"}, 0, "shop: unchanged at revision 3", ""},
		{"switch unknown version", []string{"switch", "shop", "red"}, 1, "", `route shop has no version "red"`},
		{"switch no version", []string{"switch", "shop"}, 2, "", "wrong number of arguments"},
		{"rollback", []string{"rollback", "shop"}, 0, "shop: revision 4 (admin): blue=100 green=0", ""},
		{"rollback usage", []string{"rollback"}, 2, "", "wrong number of arguments"},
		{"promote named", []string{"promote", "shop", "green"}, 0, "shop: revision 5 (admin): blue=0 green=100, stable green", ""},
		{"promote again", []string{"promote", "shop", "green"}, 0, "shop: unchanged at revision 5", ""},
		{"promote unknown", []string{"promote", "shop", "red"}, 1, "", `no version "red"`},
		{"promote too many", []string{"promote", "shop", "a", "b"}, 2, "", "wrong number of arguments"},
		{"undo", []string{"undo", "shop"}, 0, "shop: revision 6 (undo): blue=100 green=0, stable blue", ""},
		{"undo to revision", []string{"undo", "shop", "-to-revision", "3"}, 0, "shop: revision 7 (undo): blue=0 green=100, stable blue", ""},
		{"undo flag first", []string{"undo", "-to-revision=1", "shop"}, 0, "shop: revision 8 (undo): blue=100 green=0, stable blue", ""},
		{"undo unknown revision", []string{"undo", "shop", "-to-revision", "99"}, 1, "", "route shop has no revision 99"},
		{"undo current", []string{"undo", "shop", "-to-revision", "8"}, 1, "", "already the current one"},
		{"undo bad revision", []string{"undo", "shop", "-to-revision", "three"}, 2, "", "invalid value"},
		{"pause", []string{"pause", "steps"}, 0, "steps: rollout paused at step 2/2 (pause 1h0m0s)", ""},
		{"pause again", []string{"pause", "steps"}, 0, "steps: rollout already paused at step 2/2 (pause 1h0m0s)", ""},
		{"status while paused", []string{"status", "steps"}, 0, "steps: step 2/2: pause 1h0m0s (paused)", ""},
		{"resume", []string{"resume", "steps"}, 0, "steps: rollout resumed at step 2/2 (pause 1h0m0s); phase progressing", ""},
		{"promote default", []string{"promote", "steps"}, 0, "steps: revision 3 (admin): blue=0 canary=100, stable canary", ""},
		{"pause done rollout", []string{"pause", "steps"}, 1, "", "no stepped rollout in progress"},
		{"pause no steps", []string{"pause", "shop"}, 1, "", "no stepped rollout"},
		{"resume not paused", []string{"resume", "shop"}, 1, "", "not paused"},
		{"pause usage", []string{"pause"}, 2, "", "wrong number of arguments"},
		{"unknown flag", []string{"status", "-x"}, 2, "", "flag provided but not defined"},
		{"bad -o", []string{"status", "-o", "xml"}, 2, "", "-o must be table or json"},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(tt.args...)
			if code != tt.wantCode {
				t.Fatalf("veer %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(tt.args, " "), code, tt.wantCode, out, errOut)
			}
			if tt.wantOut != "" && !strings.Contains("\n"+out, "\n"+tt.wantOut+"\n") {
				t.Errorf("stdout %q lacks the line %q", out, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantErr) || (tt.wantErr == "" && errOut != "") {
				t.Errorf("stderr %q, want %q", errOut, tt.wantErr)
			}
			if code == 1 && (out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "veer "+tt.args[0]+": ")) {
				t.Errorf("exit 1 must print one line on stderr and nothing on stdout; stdout %q stderr %q", out, errOut)
			}
		})
	}
	// The CLI's changes are real: after the last undo all traffic is blue.
	sendAll(t, v, 10, blue, green)

	t.Run("history", func(t *testing.T) {
		code, out, errOut := cli("history", "shop")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if h := tableRow(out, "REV"); strings.Join(h, " ") != "REV TIME SOURCE WEIGHTS STABLE REASON" {
			t.Errorf("header %q", h)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 9 {
			t.Fatalf("%d lines, want a header and 8 revisions:\n%s", len(lines), out)
		}
		last := strings.Fields(lines[8])
		// 8 DATE TIME undo blue=100 green=0 blue undo to revision 1 by ...
		if len(last) < 8 || last[0] != "8" || last[3] != "undo" || last[4] != "blue=100" || last[5] != "green=0" || last[6] != "blue" {
			t.Errorf("last revision row %q", last)
		}
		if !strings.Contains(lines[8], "undo to revision 1 by admin API client 127.0.0.1") {
			t.Errorf("the reason does not name the client: %q", lines[8])
		}
		if first := strings.Fields(lines[1]); first[0] != "1" || first[3] != "file" {
			t.Errorf("oldest first: first row %q", first)
		}
		code, out, _ = cli("history", "shop", "-o", "json")
		var h struct {
			Revisions []struct {
				Revision int
				Source   string
			}
		}
		if code != 0 || json.Unmarshal([]byte(out), &h) != nil || len(h.Revisions) != 8 || h.Revisions[7].Source != "undo" {
			t.Errorf("history -o json: exit %d, %s", code, out)
		}
		if code, _, errOut := cli("history", "nope"); code != 1 || !strings.Contains(errOut, `no route "nope"`) {
			t.Errorf("history of an unknown route: exit %d, %q", code, errOut)
		}
	})

	t.Run("mutation -o json", func(t *testing.T) {
		code, out, _ := cli("switch", "shop", "green", "-o", "json")
		var ch adminChange
		if code != 0 || json.Unmarshal([]byte(out), &ch) != nil || !ch.Changed || ch.Revision.Revision != 9 || ch.Route.Name != "shop" {
			t.Errorf("exit %d, %s", code, out)
		}
	})

	t.Run("-admin flag and unreachable", func(t *testing.T) {
		code, _, errOut := runVeerCLI(t, nil, "status", "-admin", v.AdminURL())
		if code != 0 {
			t.Errorf("-admin %s: exit %d, %s", v.AdminURL(), code, errOut)
		}
		code, out, errOut := runVeerCLI(t, nil, "status", "-admin", "http://127.0.0.1:1")
		if code != 1 || out != "" || !strings.HasPrefix(errOut, "veer status: cannot reach veer admin API at http://127.0.0.1:1: ") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("unreachable: exit %d, stderr %q", code, errOut)
		}
		code, _, errOut = runVeerCLI(t, []string{"VEER_ADMIN=http://127.0.0.1:1"}, "rollback", "shop")
		if code != 1 || !strings.Contains(errOut, "cannot reach veer admin API at http://127.0.0.1:1") {
			t.Errorf("$VEER_ADMIN unreachable: exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("help", func(t *testing.T) {
		for _, c := range []string{"status", "weights", "switch", "promote", "rollback", "pause", "resume", "history", "undo"} {
			for _, h := range []string{"-h", "--help"} {
				code, out, _ := cli(c, h)
				if code != 0 || !strings.HasPrefix(out, "usage: veer "+c+" ") || !strings.Contains(out, "-admin URL") || !strings.Contains(out, "-o format") {
					t.Errorf("veer %s %s: exit %d, %q", c, h, code, out)
				}
			}
		}
		if _, out, _ := cli("undo", "-h"); !strings.Contains(out, "-to-revision N") {
			t.Errorf("undo -h does not show -to-revision: %s", out)
		}
	})
}

func TestCLIToken(t *testing.T) {
	blue, green, canary := NewBackend(t, "blue"), NewBackend(t, "green"), NewBackend(t, "canary")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("cli-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := StartVeer(t, cliConfig(blue, green, canary, fmt.Sprintf(", token_file: %q", tokenFile)))
	env := []string{"VEER_ADMIN=" + v.AdminURL()}
	code, _, errOut := runVeerCLI(t, env, "switch", "shop", "green")
	if code != 1 || !strings.Contains(errOut, "bearer token") {
		t.Errorf("without $VEER_ADMIN_TOKEN: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runVeerCLI(t, append(env, "VEER_ADMIN_TOKEN=wrong-token-0123456789"), "switch", "shop", "green")
	if code != 1 || !strings.Contains(errOut, "bearer token") {
		t.Errorf("with a wrong token: exit %d, stderr %q", code, errOut)
	}
	sendAll(t, v, 5, blue, green)
	code, out, errOut := runVeerCLI(t, append(env, "VEER_ADMIN_TOKEN=cli-token-0123456789"), "switch", "shop", "green")
	if code != 0 || !strings.HasPrefix(out, "shop: revision 2 (admin)") {
		t.Errorf("with the token: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	sendAll(t, v, 5, green, blue)
}
