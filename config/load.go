package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a config file, at a line.
type Problem struct {
	File string
	Line int // 0 when unknown
	Msg  string
}

// Error formats the problem as FILE:LINE: message.
func (p *Problem) Error() string {
	f := p.File
	if f == "" {
		f = "config"
	}
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", f, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", f, p.Msg)
}

// Problems returns every *Problem joined in err (as returned by Load, Parse
// and Validate), in order.
func Problems(err error) []*Problem {
	var out []*Problem
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if p, ok := e.(*Problem); ok {
			out = append(out, p)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		out = append(out, &Problem{Msg: e.Error()})
	}
	walk(err)
	return out
}

// Load reads, decodes, defaults and validates the file at path. The error,
// if any, joins one *Problem per line of trouble.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Problem{File: path, Msg: fmt.Sprintf("cannot read config: %v", err)}
	}
	return Parse(path, data)
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Parse decodes data as the config file named file (used in messages and to
// resolve relative paths), applies defaults and validates it.
func Parse(file string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlProblems(file, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		line := 1
		if len(root.Content) > 0 {
			line = root.Content[0].Line
		}
		return nil, &Problem{File: file, Line: line, Msg: "the config must be a YAML mapping with at least `routes:`"}
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, yamlProblems(file, err)
	}
	c.File = file
	c.root = &root
	c.fillOrder()
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlProblems turns yaml.v3's errors ("line 3: ...") into Problems.
func yamlProblems(file string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var out []error
	for _, m := range msgs {
		p := &Problem{File: file, Msg: strings.TrimPrefix(m, "yaml: ")}
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
			p.Msg = sm[2]
		}
		p.Msg = friendlier(p.Msg)
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].(*Problem).Line < out[j].(*Problem).Line })
	return errors.Join(out...)
}

var (
	unknownField = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	cannotDecode = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

func friendlier(m string) string {
	if sm := unknownField.FindStringSubmatch(m); sm != nil {
		return fmt.Sprintf("unknown key %q in %s", sm[1], strings.ToLower(sm[2]))
	}
	if sm := cannotDecode.FindStringSubmatch(m); sm != nil {
		want := sm[3]
		switch {
		case strings.HasPrefix(want, "[]"):
			want = "a list"
		case strings.HasPrefix(want, "map["):
			want = "a mapping"
		case want == "int" || want == "int64":
			want = "a whole number"
		case want == "float64":
			want = "a number"
		case want == "bool":
			want = "true or false"
		case want == "string":
			want = "a string"
		case strings.HasPrefix(want, "config."):
			want = "a mapping"
		}
		return fmt.Sprintf("%q (a %s) must be %s", sm[2], sm[1], want)
	}
	return m
}

// fillOrder records each route's versions in file order: the sticky layout
// and listings depend on a stable order.
func (c *Config) fillOrder() {
	for i := range c.Routes {
		r := &c.Routes[i]
		r.VersionOrder = nil
		if n := c.node("routes", i, "versions"); n != nil && n.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(n.Content); j += 2 {
				r.VersionOrder = append(r.VersionOrder, n.Content[j].Value)
			}
		}
		if len(r.VersionOrder) != len(r.Versions) { // built in code, not from a file
			r.VersionOrder = r.VersionOrder[:0]
			for name := range r.Versions {
				r.VersionOrder = append(r.VersionOrder, name)
			}
			sort.Strings(r.VersionOrder)
		}
	}
}

// node finds the node at path (mapping keys as strings, sequence indexes as
// ints); for a mapping key it returns the value. nil when absent.
func (c *Config) node(path ...any) *yaml.Node {
	n, _ := c.locate(path...)
	return n
}

// line returns the line of the deepest node on path that exists: the key's
// line for a mapping entry, so a problem points at the key it is about.
func (c *Config) line(path ...any) int {
	_, line := c.locate(path...)
	return line
}

func (c *Config) locate(path ...any) (*yaml.Node, int) {
	if c.root == nil || len(c.root.Content) == 0 {
		return nil, 0
	}
	n := c.root.Content[0]
	line := n.Line
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return nil, line
			}
			var next *yaml.Node
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == k {
					next = n.Content[j+1]
					line = n.Content[j].Line
					break
				}
			}
			if next == nil {
				return nil, line
			}
			n = next
		case int:
			if n.Kind != yaml.SequenceNode || k < 0 || k >= len(n.Content) {
				return nil, line
			}
			n = n.Content[k]
			line = n.Line
		}
	}
	return n, line
}

// ResolvePath makes p relative to the config file's directory (absolute and
// empty paths are returned as they are).
func (c *Config) ResolvePath(p string) string {
	if p == "" || filepath.IsAbs(p) || c.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}
