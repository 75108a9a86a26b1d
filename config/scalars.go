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
		return typeErr(n, fmt.Sprintf("found %s where a duration such as 250ms or 10m is expected", kindName(n)))
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		hint := ""
		if _, err := strconv.ParseFloat(n.Value, 64); err == nil {
			hint = " (add a unit: ns, us, ms, s, m or h)"
		}
		return typeErr(n, fmt.Sprintf("found %s where a duration such as 250ms, 30s or 10m is expected%s", kindName(n), hint))
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
	// f*100 is off from a whole number by at most a few ulps (2e-12 near
	// 10000) when f has two decimals; anything further has more.
	bp := math.Round(f * 100)
	if math.Abs(bp-f*100) > 1e-9 {
		return 0, fmt.Errorf("%v has more than two decimals: percentages resolve to 0.01", f)
	}
	return Percent(bp), nil
}

// Float returns p as a percentage (1250 → 12.5).
func (p Percent) Float() float64 { return float64(p) / 100 }

// String formats p without trailing zeros ("12.5").
func (p Percent) String() string { return strconv.FormatFloat(p.Float(), 'f', -1, 64) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		return typeErr(n, fmt.Sprintf("found %s where a percentage (a number from 0 to 100 with at most two decimals) is expected", kindName(n)))
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
	return typeErr(n, fmt.Sprintf("found %s where pause expects a duration such as 10m, or {} to wait for `veer resume`", kindName(n)))
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

// kindName describes what n holds, for messages: text with its value, a
// list, a mapping.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		if len(n.Content) > 0 {
			return "a mapping with keys"
		}
		return "a mapping"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return fmt.Sprintf("%q", v)
	}
	return "something else"
}
