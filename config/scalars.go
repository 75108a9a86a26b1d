package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a Go duration written as a string ("250ms", "10m").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "must be a duration such as 250ms or 10m")
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeErr(n, fmt.Sprintf("%q is not a duration (use Go durations such as 250ms, 30s, 10m)", n.Value))
	}
	if v < 0 {
		return typeErr(n, fmt.Sprintf("duration %s must not be negative", n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Percent is a percentage from 0 to 100 with at most two decimals, held
// exactly as hundredths of a percent (basis points: 100% = 10000).
type Percent int32

// PercentScale is the number of Percent units in 100%.
const PercentScale = 10000

// ParsePercent reads "12.5" as 1250 basis points.
func ParsePercent(s string) (Percent, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number from 0 to 100", s)
	}
	return PercentFromFloat(f)
}

// PercentFromFloat converts f (a percentage) to a Percent, refusing values
// outside 0..100 or with more than two decimals.
func PercentFromFloat(f float64) (Percent, error) {
	if f < 0 || f > 100 {
		return 0, fmt.Errorf("%v is out of range: percentages are from 0 to 100", f)
	}
	bp := math.Round(f * 100)
	if math.Abs(bp-f*100) > 1e-6 {
		return 0, fmt.Errorf("%v has more than two decimals (weights resolve to 0.01%%)", f)
	}
	return Percent(bp), nil
}

// Float returns p as a percentage (1250 → 12.5).
func (p Percent) Float() float64 { return float64(p) / 100 }

// String formats p without trailing zeros ("12.5").
func (p Percent) String() string { return strconv.FormatFloat(p.Float(), 'f', -1, 64) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
		return typeErr(n, fmt.Sprintf("%q must be a number from 0 to 100 with at most two decimals", n.Value))
	}
	v, err := ParsePercent(n.Value)
	if err != nil {
		return typeErr(n, err.Error())
	}
	*p = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (p Percent) MarshalYAML() (any, error) { return p.Float(), nil }

// UnmarshalYAML reads `pause: 10m` or `pause: {}`.
func (p *Pause) UnmarshalYAML(n *yaml.Node) error {
	switch {
	case n.Kind == yaml.MappingNode && len(n.Content) == 0:
		*p = Pause{Indefinite: true}
		return nil
	case n.Kind == yaml.ScalarNode:
		var d Duration
		if err := d.UnmarshalYAML(n); err != nil {
			return err
		}
		if d <= 0 {
			return typeErr(n, "pause must be a positive duration, or {} to wait for `veer resume`")
		}
		*p = Pause{Duration: d.D()}
		return nil
	}
	return typeErr(n, "pause must be a duration such as 10m, or {} to wait for `veer resume`")
}

// MarshalYAML implements yaml.Marshaler.
func (p Pause) MarshalYAML() (any, error) {
	if p.Indefinite {
		return map[string]any{}, nil
	}
	return p.Duration.String(), nil
}

// typeErr reports a problem at n's line in the form yaml.v3 uses, so that the
// decoder collects it with the others instead of stopping.
func typeErr(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
