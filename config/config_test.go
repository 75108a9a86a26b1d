package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/veer-proxy/veer/config"
	"go.yaml.in/yaml/v3"
)

// y drops the newline that follows the opening backquote, so that line 1 of
// a file written in a raw string is the line after it.
func y(s string) string { return strings.TrimPrefix(s, "\n") }

// head is a valid route of six lines; cases append lines 7 and on.
const head = `routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
      canary: {backends: ["127.0.0.1:9002"]}
    stable: blue
`

// three is head with a third version, so that no candidate is implied.
const three = `routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
      green: {backends: ["127.0.0.1:9011"]}
      canary: {backends: ["127.0.0.1:9021"]}
    stable: blue
`

func mustParse(t *testing.T, src string) *config.Config {
	t.Helper()
	c, err := config.Parse("veer.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: got error\n%v\nwant none; file:\n%s", err, src)
	}
	return c
}

func TestExampleLoads(t *testing.T) {
	c, err := config.Load(filepath.Join("..", "example.yaml"))
	if err != nil {
		t.Fatalf("Load(example.yaml): %v", err)
	}
	r := c.Routes[0]
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"routes", len(c.Routes), 1},
		{"name", r.Name, "shop"},
		{"host", r.Match.Host, "shop.example.com"},
		{"version order", r.VersionOrder, []string{"blue", "green", "canary"}},
		{"weights", r.Weights, map[string]config.Percent{"blue": 9000, "green": 0, "canary": 1000}},
		{"backends of blue", r.Versions["blue"].Backends, []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
		{"candidate", r.Candidate, "canary"},
		{"retries", *r.Retries.Attempts, 2},
		{"rule version", r.Rules[0].Version, "canary"},
		{"health check path", r.HealthCheck.Path, "/healthz"},
		{"mirror max body", r.Mirror.MaxBodyBytes, int64(65536)},
		{"admin rate limit", c.Admin.RateLimit, 20.0},
		{"state file", c.ResolvePath(c.StateFile), filepath.Join("..", "veer-state.json")},
	} {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, y(`
routes:
  - name: api
    versions:
      v1: {backends: ["10.0.0.1:80"]}
`))
	r := c.Routes[0]
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9901"},
		{"admin.token_file", c.Admin.TokenFile, ""},
		{"admin.rate_limit", c.Admin.RateLimit, 20.0},
		{"state_file", c.StateFile, "veer-state.json"},
		{"drain_timeout", c.DrainTimeout.D(), 15 * time.Second},
		{"limits.max_header_bytes", c.Limits.MaxHeaderBytes, 16384},
		{"limits.max_uri_bytes", c.Limits.MaxURIBytes, 8192},
		{"limits.max_body_bytes", c.Limits.MaxBodyBytes, int64(0)},
		{"limits.max_connections", c.Limits.MaxConnections, 0},
		{"limits.header_read_timeout", c.Limits.HeaderReadTimeout.D(), 10 * time.Second},
		{"limits.client_idle_timeout", c.Limits.ClientIdleTimeout.D(), 60 * time.Second},
		{"rate_limit", c.RateLimit, config.RateLimit{}},
		{"access_log", c.AccessLog, config.AccessLog{Format: "json"}},
		{"match", r.Match, config.Match{PathPrefix: "/"}},
		{"stable", r.Stable, "v1"},
		{"weights", r.Weights, map[string]config.Percent{"v1": 10000}},
		{"candidate", r.Candidate, ""},
		{"sticky", r.Sticky, config.Sticky{}},
		{"override_header", *r.OverrideHeader, "X-Veer-Version"},
		{"rollback.max_error_rate", *r.Rollback.MaxErrorRate, config.Percent(500)},
		{"rollback.window", r.Rollback.Window.D(), 30 * time.Second},
		{"rollback.min_requests", r.Rollback.MinRequests, 20},
		{"rollback.max_error_rate_increase", r.Rollback.MaxErrorRateIncrease, config.Percent(0)},
		{"rollback.max_p99_ratio", r.Rollback.MaxP99Ratio, 0.0},
		{"rollback.max_p99", r.Rollback.MaxP99.D(), time.Duration(0)},
		{"rollback.action", r.Rollback.Action, "rollback"},
		{"health_check (off)", r.HealthCheck, config.HealthCheck{}},
		{"outlier.consecutive_5xx", *r.Outlier.Consecutive5xx, 5},
		{"outlier.ejection_time", r.Outlier.EjectionTime.D(), 30 * time.Second},
		{"outlier.max_ejection_percent", *r.Outlier.MaxEjectionPercent, config.Percent(5000)},
		{"timeouts", r.Timeouts, config.Timeouts{
			Connect:        config.Duration(time.Second),
			ResponseHeader: config.Duration(30 * time.Second),
			Idle:           config.Duration(90 * time.Second),
			UpgradeIdle:    config.Duration(time.Hour),
		}},
		{"retries.attempts", *r.Retries.Attempts, 1},
		{"mirror", r.Mirror, config.Mirror{MaxBodyBytes: 65536}},
		{"version order", r.VersionOrder, []string{"v1"}},
		{"file", c.File, "veer.yaml"},
	} {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, tt.got, tt.want)
		}
	}
}

func TestGoodFiles(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(t *testing.T, c *config.Config)
	}{
		{
			name: "two versions imply the candidate and missing weights are 0",
			src:  head + "    weights: {blue: 100}\n",
			check: func(t *testing.T, c *config.Config) {
				r := c.Routes[0]
				if r.Candidate != "canary" {
					t.Errorf("candidate: got %q, want canary", r.Candidate)
				}
				want := map[string]config.Percent{"blue": 10000, "canary": 0}
				if !reflect.DeepEqual(r.Weights, want) {
					t.Errorf("weights: got %v, want %v", r.Weights, want)
				}
			},
		},
		{
			name: "weights with two decimals",
			src:  three + "    weights: {blue: 33.34, green: 33.33, canary: 33.33}\n",
			check: func(t *testing.T, c *config.Config) {
				want := map[string]config.Percent{"blue": 3334, "green": 3333, "canary": 3333}
				if got := c.Routes[0].Weights; !reflect.DeepEqual(got, want) {
					t.Errorf("weights: got %v, want %v", got, want)
				}
			},
		},
		{
			name: "pause {} waits for resume; analysis inherits the rollback settings",
			src: head + y(`
    rollback: {window: 1m, min_requests: 50}
    steps:
      - set_weight: 10
      - pause: 10m
      - pause: {}
      - analysis: {max_p99_ratio: 1.1}
`),
			check: func(t *testing.T, c *config.Config) {
				s := c.Routes[0].Steps
				if len(s) != 4 {
					t.Fatalf("steps: got %d, want 4", len(s))
				}
				if got := *s[0].SetWeight; got != 1000 {
					t.Errorf("set_weight: got %v, want 10", got)
				}
				if got, want := *s[1].Pause, (config.Pause{Duration: 10 * time.Minute}); got != want {
					t.Errorf("pause 10m: got %+v, want %+v", got, want)
				}
				if got, want := *s[2].Pause, (config.Pause{Indefinite: true}); got != want {
					t.Errorf("pause {}: got %+v, want %+v", got, want)
				}
				a := s[3].Analysis
				if a.Window.D() != time.Minute || a.MinRequests != 50 || *a.MaxErrorRate != 500 || a.MaxP99Ratio != 1.1 {
					t.Errorf("analysis: got %+v (max_error_rate %v), want window 1m, min_requests 50, max_error_rate 5, ratio 1.1", *a, *a.MaxErrorRate)
				}
			},
		},
		{
			name: "zeros that mean off are kept",
			src: head + y(`
    override_header: ""
    retries: {attempts: 0}
    outlier: {consecutive_5xx: 0, max_ejection_percent: 0}
`),
			check: func(t *testing.T, c *config.Config) {
				r := c.Routes[0]
				if *r.OverrideHeader != "" || *r.Retries.Attempts != 0 || *r.Outlier.Consecutive5xx != 0 || *r.Outlier.MaxEjectionPercent != 0 {
					t.Errorf("got override_header %q, attempts %d, consecutive_5xx %d, max_ejection_percent %v; want all off",
						*r.OverrideHeader, *r.Retries.Attempts, *r.Outlier.Consecutive5xx, *r.Outlier.MaxEjectionPercent)
				}
			},
		},
		{
			name: "health check defaults once a path is set",
			src:  head + "    health_check: {path: /healthz}\n",
			check: func(t *testing.T, c *config.Config) {
				want := config.HealthCheck{Path: "/healthz", Interval: config.Duration(5 * time.Second),
					Timeout: config.Duration(time.Second), Healthy: 2, Unhealthy: 3}
				if got := c.Routes[0].HealthCheck; got != want {
					t.Errorf("health_check: got %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "rules on header, cookie and query with each operator",
			src: head + y(`
    rules:
      - {header: X-Beta, equals: "true", version: canary}
      - {header: X-Beta-Bool, equals: true, version: canary}
      - {cookie: beta, version: canary}
      - {query: v, prefix: "2.", version: canary}
      - {header: User-Agent, regex: "(?i)bot", version: blue}
`),
			check: func(t *testing.T, c *config.Config) {
				rs := c.Routes[0].Rules
				if len(rs) != 5 || *rs[0].Equals != "true" || *rs[1].Equals != "true" || rs[2].Cookie != "beta" ||
					rs[2].Equals != nil || rs[3].Prefix != "2." || rs[4].Regex != "(?i)bot" {
					t.Errorf("rules: got %+v", rs)
				}
			},
		},
		{
			name: "extensions",
			src: y(`
drain_timeout: 5s
limits: {max_header_bytes: 8192, max_uri_bytes: 4096, max_body_bytes: 1048576, max_connections: 1000}
rate_limit: {requests_per_second: 50.5}
access_log: {path: stdout, format: combined}
`) + head + y(`
    mirror: {version: canary, percent: 12.5}
`),
			check: func(t *testing.T, c *config.Config) {
				r := c.Routes[0]
				for _, tt := range []struct {
					name      string
					got, want any
				}{
					{"drain_timeout", c.DrainTimeout.D(), 5 * time.Second},
					{"max_body_bytes", c.Limits.MaxBodyBytes, int64(1 << 20)},
					{"rate_limit", c.RateLimit, config.RateLimit{RequestsPerSecond: 50.5, Burst: 51}},
					{"access_log", c.AccessLog, config.AccessLog{Path: "stdout", Format: "combined"}},
					{"mirror", r.Mirror, config.Mirror{Version: "canary", Percent: 1250, MaxBodyBytes: 65536}},
				} {
					if !reflect.DeepEqual(tt.got, tt.want) {
						t.Errorf("%s: got %+v, want %+v", tt.name, tt.got, tt.want)
					}
				}
			},
		},
		{
			name: "version tls",
			src: y(`
routes:
  - name: shop
    versions:
      blue: {backends: ["app.internal:443"], tls: {enabled: true, server_name: app.example.com}}
`),
			check: func(t *testing.T, c *config.Config) {
				want := config.UpstreamTLS{Enabled: true, ServerName: "app.example.com"}
				if got := c.Routes[0].Versions["blue"].TLS; got != want {
					t.Errorf("tls: got %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "anchors, aliases and merge keys",
			src: y(`
routes:
  - name: shop
    versions:
      zulu: &one {backends: ["127.0.0.1:9001"]}
      alpha: *one
      mike: {<<: *one}
    stable: zulu
    timeouts: &t {connect: 2s}
  - name: api
    match: {path_prefix: /api}
    versions: {v: {backends: ["127.0.0.1:9101"]}}
    timeouts: *t
`),
			check: func(t *testing.T, c *config.Config) {
				if got, want := c.Routes[0].VersionOrder, []string{"zulu", "alpha", "mike"}; !reflect.DeepEqual(got, want) {
					t.Errorf("version order: got %v, want %v", got, want)
				}
				if got := c.Routes[1].Timeouts.Connect.D(); got != 2*time.Second {
					t.Errorf("aliased timeouts.connect: got %v, want 2s", got)
				}
			},
		},
		{
			name: "routes told apart by host and path",
			src: y(`
routes:
  - name: a
    match: {host: "*.example.com"}
    versions: {v: {backends: ["[::1]:80"]}}
  - name: b
    match: {host: shop.example.com, path_prefix: /api}
    versions: {v: {backends: ["localhost:80", "my_service:8080", "app.internal.:80"]}}
  - name: catch-all
    versions: {v: {backends: ["127.0.0.1:80"]}}
`),
			check: func(t *testing.T, c *config.Config) {
				if len(c.Routes) != 3 || c.Routes[2].Match.PathPrefix != "/" {
					t.Errorf("routes: got %+v", c.Routes)
				}
			},
		},
		{
			name: "duration 0 and comments",
			src:  "# veer\n" + head + "    sticky: {header: X-User-ID, drain: 0} # off\n",
			check: func(t *testing.T, c *config.Config) {
				if got := c.Routes[0].Sticky; got != (config.Sticky{Header: "X-User-ID"}) {
					t.Errorf("sticky: got %+v", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.src)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate of a parsed config: got %v, want nil", err)
			}
			tt.check(t, c)
			// Written back and read again, the config is the same.
			out, err := yaml.Marshal(c)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			c2 := mustParse(t, string(out))
			if out2, _ := yaml.Marshal(c2); string(out2) != string(out) {
				t.Errorf("read back:\n%s\nwant:\n%s", out2, out)
			}
		})
	}
}

// want is one expected problem: its line and a distinctive part of its
// message.
type want struct {
	line int
	msg  string
}

// checkProblems asserts that err holds exactly the problems ws, in order.
func checkProblems(t *testing.T, err error, ws []want) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %d problems", len(ws))
	}
	ps := config.Problems(err)
	var got strings.Builder
	for _, p := range ps {
		got.WriteString("\n\t" + p.Error())
	}
	if len(ps) != len(ws) {
		t.Fatalf("got %d problems:%s\nwant %d: %v", len(ps), got.String(), len(ws), ws)
	}
	for i, w := range ws {
		if ps[i].Line != w.line || !strings.Contains(ps[i].Msg, w.msg) {
			t.Errorf("problem %d: got line %d %q, want line %d containing %q; all:%s", i, ps[i].Line, ps[i].Msg, w.line, w.msg, got.String())
		}
		if ps[i].File != "veer.yaml" {
			t.Errorf("problem %d: got file %q, want veer.yaml", i, ps[i].File)
		}
	}
}

func TestBadFiles(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		// Empty and malformed files.
		{"empty file", "", []want{{1, "must be a YAML mapping"}}},
		{"only comments", "# nothing\n\n", []want{{1, "must be a YAML mapping"}}},
		{"a list, not a mapping", "- a\n- b\n", []want{{1, "must be a YAML mapping"}}},
		{"no routes", "listen: 127.0.0.1:8080\nroutes: []\n", []want{{2, "no routes"}}},
		{"routes left out", "listen: 127.0.0.1:8080\n", []want{{1, "no routes"}}},
		{"syntax: unclosed flow mapping", y(`
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]
    stable: blue
`), []want{{4, "YAML syntax error: did not find expected ',' or '}'"}}},
		{"syntax: unclosed flow sequence on line 2", "listen: 127.0.0.1:8080\nrouters: [a, b\nfoo: 1\n",
			[]want{{2, "did not find expected ',' or ']'"}}},
		{"syntax: bad indentation", y(`
listen: 127.0.0.1:8080
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
   stable: blue
`), []want{{6, "did not find expected '-' indicator"}}},
		{"syntax: indentation deep in the file", y(`
admin:
  listen: 127.0.0.1:9901
state_file: veer-state.json
trusted_proxies: []
drain_timeout: 15s
 limits: {}
`), []want{{6, "mapping values are not allowed in this context"}}},
		{"syntax: key indented less than its siblings", y(`
listen: 127.0.0.1:8080
routes:
  - name: shop
    versions:
        blue: {backends: ["127.0.0.1:9001"]}
      canary: {backends: ["127.0.0.1:9002"]}
    stable: blue
`), []want{{6, "did not find expected key"}}},
		{"syntax: tab", "listen: 127.0.0.1:8080\n\tadmin: {}\n", []want{{2, "tab character"}}},
		{"syntax: mapping value in the wrong place", "admin:\n  listen: a\n   token_file: b\n", []want{{3, "mapping values are not allowed"}}},
		{"syntax: unterminated quote", "listen: a\nadmin:\n  listen: \"b\nroutes: []\n", []want{{3, "unexpected end of stream"}}},
		{"syntax: control character", "listen: a\nstate_file: \"x\x01\"\n", []want{{2, "control characters are not allowed"}}},
		{"syntax: invalid UTF-8", "listen: a\n\nstate_file: \xff\n", []want{{3, "UTF-8"}}},
		{"second document", head + "---\nlisten: x\n", []want{{7, "second YAML document"}}},

		// Unknown keys.
		{"unknown key at the top level", head + "bogus: 1\n", []want{{7, `unknown key "bogus" at the top level; expected one of: listen, admin,`}}},
		{"unknown key in a route", head + "    weight: {blue: 100}\n", []want{{7, `unknown key "weight" in a route; expected one of: name, match, stable, versions, weights,`}}},
		{"unknown key in rollback", head + "    rollback: {max_error: 5}\n", []want{{7, `unknown key "max_error" in rollback; expected one of: max_error_rate, window,`}}},
		{"unknown key in a version", y(`
routes:
  - name: shop
    versions:
      blue:
        backends: ["127.0.0.1:9001"]
        weight: 100
`), []want{{6, `unknown key "weight" in a version; expected one of: backends, tls`}}},
		{"unknown key in admin", "admin:\n  listen: 127.0.0.1:9901\n  token: abc\n" + head, []want{{3, `unknown key "token" in admin`}}},
		{"unknown key in an analysis step", head + "    steps: [{analysis: {windw: 5m}}]\n", []want{{7, `unknown key "windw" in analysis`}}},
		{"unknown key in a rule", head + "    rules: [{header: X, version: canary, value: 1}]\n", []want{{7, `unknown key "value" in a rule`}}},

		// Wrong types.
		{"text for a whole number", head + "    retries: {attempts: two}\n", []want{{7, `found "two" where a whole number is expected`}}},
		{"fraction for a whole number", head + "    retries: {attempts: 1.5}\n", []want{{7, "found the number 1.5 where a whole number is expected"}}},
		{"-.inf for a whole number", head + "    rollback: {min_requests: -.inf}\n", []want{{7, "where a whole number is expected"}}},
		{"text for a mapping", head + "    weights: blue\n", []want{{7, `found "blue" where a mapping is expected`}}},
		{"mapping for a list", head + "    rules: {header: X}\n", []want{{7, "found a mapping where a list is expected"}}},
		{"list for a string", head + "    sticky: {header: [X-User]}\n", []want{{7, "found a list where a string is expected"}}},
		{"text for true or false", "listen: 127.0.0.1:8080\n" + y(`
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"], tls: {enabled: yes please}}
`), []want{{5, "where true or false is expected"}}},
		{"number without unit for a duration", head + "    timeouts: {connect: 30}\n", []want{{7, `found "30" where a duration such as 250ms, 30s or 10m is expected (add a unit`}}},
		{"list for a duration", head + "    timeouts: {idle: [1s]}\n", []want{{7, "found a list where a duration"}}},
		{"quoted weight", head + "    weights: {blue: \"100\"}\n", []want{{7, `found "100" where a percentage`}}},
		{"null version name", y(`
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
      ~: {backends: ["127.0.0.1:9002"]}
`), []want{{5, `empty key "~"`}}},
		{"a number for the listen address", "listen: 8080\n" + head, []want{{1, `"8080" is not a listen address: use host:port`}}},

		// Durations and percentages.
		{"negative duration", head + "    rollback: {window: -5s}\n", []want{{7, "duration -5s must not be negative"}}},
		{"negative drain_timeout", "drain_timeout: -1s\n" + head, []want{{1, "duration -1s must not be negative"}}},
		{"weights not totalling 100", head + "    weights: {blue: 90, canary: 5}\n", []want{{7, "weights total 95; they must total 100"}}},
		{"weights over 100 in total", head + "    weights: {blue: 90, canary: 20.5}\n", []want{{7, "weights total 110.5; they must total 100"}}},
		{"weight above 100", head + "    weights: {blue: 100.5}\n", []want{{7, "100.5 is out of range: percentages are from 0 to 100"}}},
		{"negative weight", head + "    weights: {blue: 100, canary: -1}\n", []want{{7, "-1 is out of range"}}},
		{"more than two decimals", head + y(`
    weights:
      blue: 99.995
      canary: 0.005
`), []want{{8, "99.995 has more than two decimals"}, {9, "0.005 has more than two decimals"}}},
		{"more than two decimals in max_error_rate", head + "    rollback: {max_error_rate: 0.125}\n", []want{{7, "0.125 has more than two decimals"}}},

		// Versions.
		{"unknown version in weights", head + y(`
    weights:
      blue: 90
      green: 10
`), []want{{9, `weights name "green", which is not a version of this route (versions: blue, canary)`}}},
		{"unknown stable", strings.Replace(head, "stable: blue", "stable: green", 1), []want{{6, `stable "green" is not a version of this route`}}},
		{"no stable with two versions", strings.Replace(head, "    stable: blue\n", "", 1), []want{{2, "stable is required when a route has more than one version"}}},
		{"unknown candidate", head + "    candidate: green\n", []want{{7, `candidate "green" is not a version of this route`}}},
		{"candidate is stable", head + "    candidate: blue\n", []want{{7, `candidate "blue" is the stable version`}}},
		{"unknown version in a rule", head + y(`
    rules:
      - header: X-Beta
        version: green
`), []want{{9, `rule version "green" is not a version of this route`}}},
		{"unknown mirror version", head + "    mirror: {version: green, percent: 10}\n", []want{{7, `mirror.version "green" is not a version of this route`}}},
		{"mirror percent without a version", head + "    mirror: {percent: 10}\n", []want{{7, "mirror.percent needs mirror.version"}}},
		{"version with no backends", y(`
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
      canary: {backends: []}
      green: {}
    stable: blue
`), []want{{5, `version "canary" has no backends`}, {6, `version "green" has no backends`}}},
		{"route with no versions", "routes:\n  - name: shop\n", []want{{2, "route has no versions"}}},
		{"bad backends", y(`
routes:
  - name: shop
    versions:
      blue:
        backends:
          - 127.0.0.1
          - http://127.0.0.1:9001
          - 127.0.0.1:0
          - 127.0.0.1:65536
          - bad host:80
          - :80
          - 127.0.0.1:9001
          - 127.0.0.1:9001
`), []want{
			{6, `backend "127.0.0.1" is not host:port`},
			{7, `backend "http://127.0.0.1:9001" must be host:port without a scheme`},
			{8, `backend "127.0.0.1:0": the port must be a number from 1 to 65535`},
			{9, `backend "127.0.0.1:65536": the port must be a number from 1 to 65535`},
			{10, `backend "bad host:80": the host must be an IP address or a host name`},
			{11, `backend ":80" is not host:port`},
			{13, `lists backend 127.0.0.1:9001 twice`},
		}},
		{"tls settings without enabled", y(`
routes:
  - name: shop
    versions:
      blue:
        backends: ["127.0.0.1:9001"]
        tls: {server_name: app.example.com}
`), []want{{6, "tls settings without tls.enabled: true"}}},

		// Routes.
		{"duplicate route names", head + y(`
  - name: shop
    match: {path_prefix: /api}
    versions: {v: {backends: ["127.0.0.1:9101"]}}
`), []want{{7, `route name "shop" is already used by route 1 (line 2)`}}},
		{"same match twice", head + y(`
  - name: other
    versions: {v: {backends: ["127.0.0.1:9101"]}}
`), []want{{7, `route "other" matches the same host and path_prefix as route "shop"`}}},
		{"bad route names", y(`
routes:
  - name: Shop
    match: {path_prefix: /1}
    versions: {v: {backends: ["127.0.0.1:1"]}}
  - name: -shop
    match: {path_prefix: /2}
    versions: {v: {backends: ["127.0.0.1:1"]}}
  - name: shop_1
    match: {path_prefix: /3}
    versions: {v: {backends: ["127.0.0.1:1"]}}
  - match: {path_prefix: /4}
    versions: {v: {backends: ["127.0.0.1:1"]}}
`), []want{
			{2, `route name "Shop" must be 1-63 characters of [a-z0-9-]`},
			{5, `route name "-shop" must be`},
			{8, `route name "shop_1" must be`},
			{11, "route has no name"},
		}},
		{"bad match", head + "    match: {host: \"shop example\", path_prefix: api}\n", []want{
			{7, `match.host "shop example" must be a host name or *.suffix`},
			{7, `match.path_prefix "api" must start with /`},
		}},

		// Rollback and steps.
		{"bad rollback.action", head + "    rollback: {action: revert}\n", []want{{7, `rollback.action "revert" must be rollback or freeze`}}},
		{"rollback window too short", head + "    rollback: {window: 500ms}\n", []want{{7, "rollback.window must be at least 1s"}}},
		{"negative min_requests", head + "    rollback: {min_requests: -1}\n", []want{{7, "rollback.min_requests must be at least 1"}}},
		{"NaN ratio", head + "    rollback: {max_p99_ratio: .nan}\n", []want{{7, "rollback.max_p99_ratio NaN must be 0 (off) or a ratio"}}},
		{"steps without candidate", three + y(`
    steps:
      - set_weight: 20
`), []want{{8, "steps need a candidate"}}},
		{"a step with two kinds", head + y(`
    steps:
      - set_weight: 20
      - {set_weight: 50, pause: 1m}
      - {}
`), []want{{9, "a step is exactly one of set_weight, pause or analysis; this one has 2"}, {10, "this one has 0"}}},
		{"pause with keys", head + y(`
    steps:
      - pause: {x: 1}
`), []want{{8, "found a mapping with keys where pause expects a duration such as 10m, or {}"}}},
		{"pause 0", head + "    steps: [{pause: 0s}]\n", []want{{7, "pause must be a positive duration"}}},

		// Rules.
		{"bad regex in a rule", head + y(`
    rules:
      - header: User-Agent
        regex: "bot("
        version: canary
`), []want{{9, `rule regex "bot(" does not compile`}}},
		{"rule naming two things", head + "    rules: [{header: X, cookie: y, version: canary}]\n", []want{{7, "a rule names exactly one of header, cookie or query; this one names 2"}}},
		{"rule with two operators", head + "    rules: [{header: X, equals: a, prefix: b, version: canary}]\n", []want{{7, "at most one of equals, prefix or regex"}}},
		{"rule without version", head + "    rules: [{header: X}]\n", []want{{7, "a rule needs a version"}}},

		// Anchors and aliases.
		{"anchor that contains itself", "trusted_proxies: &x [*x]\n" + head, []want{{1, "found a list where a string is expected"}}},
		{"anchor merged into itself", head + "    timeouts: &t {<<: *t}\n", []want{{7, "anchor 't' value contains itself"}}},
		{"anchor merged into itself, in a mapping of names", head + "    weights: &w {<<: *w}\n", []want{{7, "anchor 'w' value contains itself"}}},
		{"unknown anchor", head + "    stable: *nope\n", []want{{7, "unknown anchor 'nope' referenced"}}},
		{"merge key with a number", head + "    timeouts: {<<: 5}\n", []want{{7, "the merge key << needs a mapping or a list of mappings"}}},
		{"list as a version name", strings.Replace(head, "      canary:", "      [canary]:", 1), []want{{5, "a key must be a name, not a list or a mapping"}}},
		{"mapping as a key next to a merge key", head + "    {a: 1}: 1\n    <<: {name: x}\n", []want{{7, "a key must be a name"}}},

		// Duplicate keys.
		{"duplicate top-level key", "listen: 127.0.0.1:8080\nlisten: 127.0.0.1:8081\n" + head, []want{{2, `duplicate key "listen", first set on line 1`}}},
		{"duplicate version", y(`
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
      blue: {backends: ["127.0.0.1:9002"]}
`), []want{{5, `duplicate key "blue", first set on line 4`}}},
		{"duplicate key in a flow mapping", head + "    weights: {blue: 50, blue: 50}\n", []want{{7, `duplicate key "blue"`}}},

		// Admin and other top-level settings.
		{"non-loopback admin without token_file", "admin: {listen: 0.0.0.0:9901}\n" + head, []want{{1, "admin.listen 0.0.0.0:9901 is not a loopback address: set admin.token_file"}}},
		{"all-interfaces admin without token_file", "admin:\n  listen: :9901\n" + head, []want{{2, "admin.listen :9901 is not a loopback address"}}},
		{"missing token file", "admin: {listen: 0.0.0.0:9901, token_file: /nonexistent/veer-token}\n" + head, []want{{1, "admin.token_file: stat /nonexistent/veer-token"}}},
		{"bad listen port", "listen: 127.0.0.1:http\n" + head, []want{{1, "the port must be a number from 0 to 65535"}}},
		{"bad trusted proxy", "trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n" + head, []want{{1, `"10.0.0.0/33" is not a CIDR or IP address`}}},
		{"bad access log format", "access_log: {format: xml}\n" + head, []want{{1, `access_log.format "xml" must be json or combined`}}},
		{"bad webhook", y(`
notify:
  webhooks:
    - url: hooks.example/veer
      events: [rollback, explode]
`) + head, []want{{3, `webhook url "hooks.example/veer" must be an absolute http:// or https:// URL`}, {4, `unknown event "explode"`}}},
		{"limits out of range", "limits: {max_header_bytes: 100, max_uri_bytes: 10}\n" + head, []want{
			{1, "limits.max_header_bytes must be from 1024 to 1048576"},
			{1, "limits.max_uri_bytes must be from 64"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("veer.yaml", []byte(tt.src))
			if c != nil {
				t.Errorf("got a config, want none")
			}
			checkProblems(t, err, tt.want)
		})
	}
}

// TestAllProblemsAtOnce checks that one file's problems are reported
// together and sorted by line, both those of form and those of value.
func TestAllProblemsAtOnce(t *testing.T) {
	t.Run("values", func(t *testing.T) {
		src := y(`
admin: {listen: 0.0.0.0:9901}
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
      green: {backends: ["127.0.0.1"]}
      canary: {backends: []}
    stable: blue
    rules:
      - {header: X-Beta, regex: "(", version: canary}
    weights: {blue: 90, green: 5, purple: 3}
    steps: [{set_weight: 10}]
    rollback: {action: revert}
  - name: shop
    match: {host: shop.example.com}
    versions: {v: {backends: ["127.0.0.1:9101"]}}
    mirror: {version: w}
`)
		_, err := config.Parse("veer.yaml", []byte(src))
		checkProblems(t, err, []want{
			{1, "is not a loopback address"},
			{6, `version "green": backend "127.0.0.1" is not host:port`},
			{7, `version "canary" has no backends`},
			{10, `rule regex "(" does not compile`},
			{11, `weights name "purple"`},
			{11, "weights total 98"},
			{12, "steps need a candidate"},
			{13, `rollback.action "revert"`},
			{14, `route name "shop" is already used by route 1`},
			{17, `mirror.version "w"`},
		})
	})
	t.Run("form", func(t *testing.T) {
		src := y(`
listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9901
  tokenfile: x
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"]}
    retries: {attempts: many}
    timeouts: {connect: 1}
    listen: 127.0.0.1:8081
    weights: {blue: 100.001}
listen: 127.0.0.1:8082
`)
		_, err := config.Parse("veer.yaml", []byte(src))
		checkProblems(t, err, []want{
			{4, `unknown key "tokenfile" in admin`},
			{9, `found "many" where a whole number is expected`},
			{10, "where a duration such as"},
			{11, `unknown key "listen" in a route`},
			{12, "100.001 is out of range"},
			{13, `duplicate key "listen", first set on line 1`},
		})
	})
}

func TestTokenAndStateFileAreRelativeToTheConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("  0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := "admin: {listen: 0.0.0.0:9901, token_file: token}\nstate_file: state/veer.json\n" + head
	file := filepath.Join(dir, "veer.yaml")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(file)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	tok, err := config.ReadToken(c.ResolvePath(c.Admin.TokenFile))
	if err != nil || tok != "0123456789abcdef0123" {
		t.Errorf("ReadToken: got %q, %v; want the trimmed token", tok, err)
	}
	if got, want := c.ResolvePath(c.StateFile), filepath.Join(dir, "state", "veer.json"); got != want {
		t.Errorf("state file: got %q, want %q", got, want)
	}

	// The same file read from another directory cannot find its token.
	if _, err := config.Parse("elsewhere/veer.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), "elsewhere/veer.yaml:1: admin.token_file") {
		t.Errorf("Parse from another directory: got %v, want a token_file problem on line 1", err)
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{"good", write("good", "0123456789abcdef\n"), ""},
		{"short", write("short", "secret\n"), "at least 16 characters"},
		{"too large", write("large", strings.Repeat("x", 5000)), "at most 4096 bytes"},
		{"directory", dir, "must be a regular file"},
		{"missing", filepath.Join(dir, "missing"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ReadToken(tt.path)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("ReadToken: got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadReportsTheFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(file, []byte(head+"    weights: {blue: 50}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(file)
	if got, want := err.Error(), file+":7: weights total 50; they must total 100"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, err = config.Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if ps := config.Problems(err); len(ps) != 1 || !strings.Contains(ps[0].Msg, "cannot read config") {
		t.Errorf("missing file: got %v, want one cannot-read problem", err)
	}
}

func TestProblems(t *testing.T) {
	p1 := &config.Problem{File: "a.yaml", Line: 3, Msg: "x"}
	p2 := &config.Problem{Msg: "y"}
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"nil", nil, nil},
		{"one", p1, []string{"a.yaml:3: x"}},
		{"joined", errors.Join(p1, p2), []string{"a.yaml:3: x", "config: y"}},
		{"other error", errors.New("boom"), []string{"config: boom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range config.Problems(tt.err) {
				got = append(got, p.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestValidateBuiltInCode checks that Validate does not depend on Parse:
// a Config built in code, with nil pointers and no VersionOrder, gets
// problems, not a panic.
func TestValidateBuiltInCode(t *testing.T) {
	c := &config.Config{
		Listen: "127.0.0.1:8080",
		Admin:  config.Admin{Listen: "127.0.0.1:9901"},
		Limits: config.Limits{MaxHeaderBytes: 16384, MaxURIBytes: 8192},
		Routes: []config.Route{{
			Name:     "shop",
			Match:    config.Match{PathPrefix: "/"},
			Stable:   "blue",
			Versions: map[string]config.Version{"blue": {Backends: []string{"127.0.0.1:9001"}}, "canary": {}},
			Weights:  map[string]config.Percent{"blue": 10000, "canary": 0},
			Rollback: config.Rollback{Window: config.Duration(time.Minute), MinRequests: 10, Action: "rollback"},
		}},
	}
	ps := config.Problems(c.Validate())
	var msgs []string
	for _, p := range ps {
		msgs = append(msgs, p.Msg)
	}
	want := []string{`version "canary" has no backends: list at least one host:port`, "rollback.max_error_rate is required"}
	if !reflect.DeepEqual(msgs, want) {
		t.Errorf("got %q, want %q", msgs, want)
	}
}

func TestParsePercent(t *testing.T) {
	tests := []struct {
		in      string
		want    config.Percent
		wantErr string
	}{
		{"0", 0, ""},
		{"100", 10000, ""},
		{"0.5", 50, ""},
		{"12.34", 1234, ""},
		{"33.33", 3333, ""},
		{"1e1", 1000, ""},
		{"0.001", 0, "more than two decimals"},
		{"12.345", 0, "more than two decimals"},
		{"100.01", 0, "out of range"},
		{"-0.01", 0, "out of range"},
		{"NaN", 0, "not a number"},
		{"ten", 0, "not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := config.ParsePercent(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
			if s := got.String(); s != strings.TrimSuffix(tt.in, ".0") && tt.in != "1e1" {
				t.Errorf("String: got %q, want %q", s, tt.in)
			}
		})
	}
}
