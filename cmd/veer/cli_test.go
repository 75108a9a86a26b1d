package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/veer-proxy/veer/admin"
	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/events"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/rollout"
	"github.com/veer-proxy/veer/router"
)

// apiServer is the real admin handler over a real controller.
func apiServer(t *testing.T, token string) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "veer.yaml"), []byte(`
routes:
  - name: shop
    stable: blue
    versions:
      blue:  {backends: ["127.0.0.1:9001", "127.0.0.1:9002"]}
      green: {backends: ["127.0.0.1:9011"]}
    weights: {blue: 100, green: 0}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	log := slog.New(slog.DiscardHandler)
	ctrl, err := rollout.New(rollout.Options{Config: cfg, StateFile: filepath.Join(dir, "state.json"),
		Registry: router.NewRegistry(m), Metrics: m, Events: events.New(100, nil), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.New(admin.Options{Controller: ctrl, Metrics: m, Token: token, RateLimit: 1000, Log: log}))
	t.Cleanup(srv.Close)
	return srv
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLIInProcess(t *testing.T) {
	srv := apiServer(t, "")
	t.Setenv("VEER_ADMIN", srv.URL)
	t.Setenv("VEER_ADMIN_TOKEN", "")
	tests := []struct {
		args       []string
		wantCode   int
		wantOut    string
		wantErr    string
		wantNotOut string
	}{
		{[]string{"status"}, 0, "shop   blue*    100%", "", ""},
		{[]string{"weights", "shop", "blue=90", "green=10%"}, 0, "shop: revision 2 (admin): blue=90 green=10\n", "", ""},
		{[]string{"weights", "shop", "blue=90", "green=10"}, 0, "shop: unchanged at revision 2\n", "", ""},
		{[]string{"weights", "shop", "blue=90"}, 1, "", "veer weights: weights total 90, they must total 100\n", ""},
		{[]string{"weights", "shop", "blue"}, 2, "", `"blue" is not VERSION=PCT`, ""},
		{[]string{"weights", "shop", "blue=ten"}, 2, "", `weight "ten" of blue is not a number`, ""},
		{[]string{"weights", "shop", "blue=NaN"}, 2, "", "is not a number", ""},
		{[]string{"weights", "shop", "blue=50", "blue=50"}, 2, "", "given twice", ""},
		{[]string{"weights", "shop"}, 2, "", "wrong number of arguments", ""},
		{[]string{"switch", "shop", "green"}, 0, "shop: revision 3 (admin): blue=0 green=100\n", "", ""},
		{[]string{"switch", "-o", "json", "shop", "green"}, 0, `"changed": false`, "", ""},
		{[]string{"undo", "shop", "-to-revision", "1"}, 0, "shop: revision 4 (undo): blue=100 green=0, stable blue\n", "", ""},
		{[]string{"undo", "-to-revision=0", "shop"}, 2, "", "-to-revision must be 1 or more", ""},
		{[]string{"undo", "shop", "-to-revision", "x"}, 2, "", "invalid value", ""},
		{[]string{"status", "-o", "yaml"}, 2, "", "-o must be table or json", ""},
		{[]string{"status", "shop", "extra"}, 2, "", "wrong number of arguments (2)", ""},
		{[]string{"status", "-nope"}, 2, "", "flag provided but not defined: -nope", ""},
		{[]string{"status", "nope"}, 1, "", "veer status: no route \"nope\"\n", ""},
		{[]string{"history", "shop", "-h"}, 0, "usage: veer history ROUTE", "", ""},
		{[]string{"rollback", "--help"}, 0, "-admin URL", "", ""},
		{[]string{"status", "-admin", "127.0.0.1:1"}, 1, "", "veer status: cannot reach veer admin API at http://127.0.0.1:1: ", ""},
		{[]string{"pause", "shop"}, 1, "", "no stepped rollout", ""},
		{[]string{"history", "shop"}, 0, "REV  TIME", "", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", out, tt.wantOut)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", errOut, tt.wantErr)
			}
			if tt.wantErr == "" && errOut != "" {
				t.Errorf("unexpected stderr %q", errOut)
			}
			if code != 0 && strings.Count(errOut, "\n") > 2 {
				t.Errorf("stderr is more than a reason and a usage hint: %q", errOut)
			}
		})
	}
}

func TestCLIToken(t *testing.T) {
	srv := apiServer(t, "tok")
	t.Setenv("VEER_ADMIN", srv.URL)
	t.Setenv("VEER_ADMIN_TOKEN", "")
	code, _, errOut := runCLI(t, "status")
	if code != 1 || !strings.Contains(errOut, "bearer token") || !strings.Contains(errOut, "$VEER_ADMIN_TOKEN is not set") {
		t.Errorf("without token: exit %d, stderr %q", code, errOut)
	}
	t.Setenv("VEER_ADMIN_TOKEN", "tok")
	if code, _, errOut := runCLI(t, "status"); code != 0 {
		t.Errorf("with token: exit %d, stderr %q", code, errOut)
	}
}

func TestCLIRetries429(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			w.Write([]byte(`{"error": "too many requests"}`))
			return
		}
		w.Write([]byte(`{"routes": []}`))
	}))
	defer srv.Close()
	code, _, errOut := runCLI(t, "status", "-admin", srv.URL)
	if code != 0 || n.Load() != 2 {
		t.Errorf("exit %d after %d calls, want 0 after 2; stderr %q", code, n.Load(), errOut)
	}
}

func TestCLINotVeer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	code, _, errOut := runCLI(t, "status", "-admin", srv.URL)
	if code != 1 || !strings.Contains(errOut, "not an answer of veer's admin API") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestCLIJSONIsTheAPIs(t *testing.T) {
	srv := apiServer(t, "")
	code, out, errOut := runCLI(t, "status", "-admin", srv.URL, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	resp, err := http.Get(srv.URL + "/api/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fromAPI, fromCLI any
	if err := json.NewDecoder(resp.Body).Decode(&fromAPI); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &fromCLI); err != nil {
		t.Fatalf("-o json output is not JSON: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(fromAPI, fromCLI) {
		t.Errorf("-o json differs from the API:\n%s", out)
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
		wantN   int
	}{
		{[]string{"shop", "-n", "3"}, []string{"shop"}, 3},
		{[]string{"-n", "3", "shop"}, []string{"shop"}, 3},
		{[]string{"shop", "a=1", "-n=2", "b=2"}, []string{"shop", "a=1", "b=2"}, 2},
		{[]string{"shop", "--", "-n", "4"}, []string{"shop", "-n", "4"}, 0},
		{nil, nil, 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			n := fs.Int("n", 0, "")
			pos, err := parseInterspersed(fs, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pos, tt.wantPos) || *n != tt.wantN {
				t.Errorf("got %q n=%d, want %q n=%d", pos, *n, tt.wantPos, tt.wantN)
			}
		})
	}
}

func TestFormats(t *testing.T) {
	for _, tt := range []struct {
		ms   float64
		want string
	}{{0.012, "12µs"}, {12.345, "12.3ms"}, {1234.5, "1.23s"}, {250, "250ms"}} {
		if got := fmtMs(tt.ms); got != tt.want {
			t.Errorf("fmtMs(%v) = %q, want %q", tt.ms, got, tt.want)
		}
	}
	if got := fmtWeights([]string{"blue", "green"}, map[string]float64{"green": 12.5, "blue": 87.5, "old": 0}); got != "blue=87.5 green=12.5 old=0" {
		t.Errorf("fmtWeights = %q", got)
	}
	if got := normalizeBase("127.0.0.1:9901/"); got != "http://127.0.0.1:9901" {
		t.Errorf("normalizeBase = %q", got)
	}
}
