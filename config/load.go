package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"

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

// Parse decodes data as the config file named file (used in messages and to
// resolve relative paths), applies defaults and validates it.
//
// Problems of form (YAML syntax, unknown keys, duplicate keys, wrong types)
// are reported first, all of them; once the file decodes, every problem of
// value is reported. The two are not mixed, because a value that failed to
// decode would show up again as a misleading second problem (a weight that
// is not a number would also make the weights not total 100).
func Parse(file string, data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && err != io.EOF {
		return nil, joinSorted(syntaxProblems(file, data, err))
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		line := 1
		if len(root.Content) > 0 {
			line = min(root.Content[0].Line, lastLine(data))
		}
		return nil, &Problem{File: file, Line: line, Msg: "the config must be a YAML mapping of keys such as listen: and routes:, with at least one route"}
	}
	probs := checkForm(file, root.Content[0], reflect.TypeFor[Config]())
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		probs = append(probs, &Problem{File: file, Line: next.Line,
			Msg: "a second YAML document (after ---): the config is one document; remove it or the --- line"})
	case err != io.EOF:
		probs = append(probs, syntaxProblems(file, data, err)...)
	}
	c := &Config{}
	// checkForm has reported unknown and duplicate keys (and removed the
	// duplicates), so the node is decoded without KnownFields: that way
	// every problem is reported, where yaml.v3 skips a whole mapping that
	// has a duplicate key.
	if err := root.Content[0].Decode(c); err != nil {
		probs = append(probs, decodeProblems(file, data, &root, err, len(probs) > 0)...)
	}
	if len(probs) > 0 {
		for _, p := range probs {
			p.Line = min(p.Line, lastLine(data))
		}
		return nil, joinSorted(probs)
	}
	c.File = file
	c.root = &root
	c.lines = lastLine(data)
	c.fillOrder()
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// joinSorted joins probs in line order, dropping repeats (a mapping reached
// twice through an alias). The sort is stable, so problems on one line keep
// the order they were found in.
func joinSorted(probs []*Problem) error {
	sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
	var errs []error
	seen := map[Problem]bool{}
	for _, p := range probs {
		if !seen[*p] {
			seen[*p] = true
			errs = append(errs, p)
		}
	}
	return errors.Join(errs...)
}

// fillOrder records each route's versions in file order: the sticky layout
// and listings depend on a stable order. VersionOrder always lists every key
// of Versions once: keys the file does not spell as they decode (an alias,
// a merge key) keep sorted order after the others.
func (c *Config) fillOrder() {
	for i := range c.Routes {
		r := &c.Routes[i]
		var names []string
		if n := c.node("routes", i, "versions"); n != nil && n.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(n.Content); j += 2 {
				names = append(names, n.Content[j].Value)
			}
		}
		r.VersionOrder = versionOrder(r.Versions, names)
	}
}

// versionOrder returns the keys of versions, those in names first in that
// order, then the rest sorted.
func versionOrder(versions map[string]Version, names []string) []string {
	out := make([]string, 0, len(versions))
	seen := make(map[string]bool, len(versions))
	for _, v := range names {
		if _, ok := versions[v]; ok && !seen[v] {
			out = append(out, v)
			seen[v] = true
		}
	}
	for _, v := range sortedKeys(versions) {
		if !seen[v] {
			out = append(out, v)
		}
	}
	return out
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
	if c.lines > 0 {
		line = min(line, c.lines)
	}
	return line
}

func (c *Config) locate(path ...any) (*yaml.Node, int) {
	if c.root == nil || len(c.root.Content) == 0 {
		return nil, 0
	}
	n := c.root.Content[0]
	line := n.Line
	for _, p := range path {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
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
