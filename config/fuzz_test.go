package config_test

import (
	"bytes"
	"testing"

	"github.com/veer-proxy/veer/config"
	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, that every problem it reports
// names the file and a line of it, and that a config it returns is valid,
// fully defaulted, and survives being written back as YAML and read again
// (so that what Duration, Percent and Pause write, they read). The seed corpus is under testdata/fuzz/FuzzParse: the
// example config, small good and bad files, and the crashers found so far.
func FuzzParse(f *testing.F) {
	f.Add([]byte(head))
	f.Add([]byte(three + "    steps: [{set_weight: 10}, {pause: {}}, {analysis: {window: 1m}}]\n    candidate: canary\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config with the error %v", err)
			}
			// At most one more line than line breaks, as yaml.v3 counts
			// them: LF, CR, CR LF, U+0085, U+2028, U+2029.
			lines := 1 + bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) +
				bytes.Count(data, []byte("\u0085")) + bytes.Count(data, []byte("\u2028")) + bytes.Count(data, []byte("\u2029"))
			for _, p := range config.Problems(err) {
				if p.File != "fuzz.yaml" || p.Line < 1 || p.Line > lines || p.Msg == "" {
					t.Errorf("problem %q: want file fuzz.yaml, a line from 1 to %d and a message", p.Error(), lines)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse returned a config that Validate refuses: %v", err)
		}
		for _, r := range c.Routes {
			if len(r.VersionOrder) != len(r.Versions) {
				t.Errorf("route %s: VersionOrder %v does not list the versions once each", r.Name, r.VersionOrder)
			}
			for _, v := range r.VersionOrder {
				if _, ok := r.Versions[v]; !ok {
					t.Errorf("route %s: VersionOrder names %q, which is not a version", r.Name, v)
				}
			}
			var total int
			for _, w := range r.Weights {
				total += int(w)
			}
			if total != config.PercentScale {
				t.Errorf("route %s: weights %v total %d basis points, want %d", r.Name, r.Weights, total, config.PercentScale)
			}
			if _, ok := r.Versions[r.Stable]; !ok {
				t.Errorf("route %s: stable %q is not a version", r.Name, r.Stable)
			}
			if r.OverrideHeader == nil || r.Rollback.MaxErrorRate == nil || r.Outlier.Consecutive5xx == nil ||
				r.Outlier.MaxEjectionPercent == nil || r.Retries.Attempts == nil {
				t.Errorf("route %s: a default is missing: %+v", r.Name, r)
			}
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c2, err := config.Parse("fuzz.yaml", out)
		if err != nil {
			t.Fatalf("the config written back does not parse: %v\n%s", err, out)
		}
		if out2, err := yaml.Marshal(c2); err != nil || !bytes.Equal(out2, out) {
			t.Fatalf("the config read back differs (%v):\n%s\nwant:\n%s", err, out2, out)
		}
	})
}
