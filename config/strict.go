package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// This file holds the strict half of decoding: what yaml.v3 does not check,
// or reports in its own terms, turned into Problems in the file's terms.

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// splitLine splits yaml.v3's "line 3: message" (with or without "yaml: ").
func splitLine(m string) (int, string) {
	if sm := yamlLine.FindStringSubmatch(m); sm != nil {
		n, _ := strconv.Atoi(sm[1])
		return n, sm[2]
	}
	return 0, strings.TrimPrefix(m, "yaml: ")
}

// syntaxProblems turns a YAML syntax error into a Problem at its line.
func syntaxProblems(file string, data []byte, err error) []*Problem {
	line, msg := splitLine(err.Error())
	return []*Problem{{File: file, Line: syntaxLine(data, msg, line), Msg: "YAML syntax error: " + msg}}
}

var anchorProblem = regexp.MustCompile(`^(unknown anchor|anchor) '(.*)' (referenced|value contains itself)$`)

// decodeProblems turns the errors of yaml.v3's Node.Decode of root into
// Problems: the type errors, all of them, or the one error that stopped it.
// That error comes without a line, which is found where it can be. Its
// causes that cannot be located (a bad merge key, an unhashable key,
// !!binary) are ones checkForm reports with their lines, so when reported
// (other problems were found) an error with no line is left out.
func decodeProblems(file string, data []byte, root *yaml.Node, err error, reported bool) []*Problem {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		line, msg := splitLine(err.Error())
		switch sm := anchorProblem.FindStringSubmatch(msg); {
		case line != 0:
		case sm != nil:
			// The anchor's definition, whose value refers to itself.
			line = textLine(data, "&"+sm[2])
		case msg == "document contains excessive aliasing":
			line = firstAlias(root)
		}
		if line == 0 && reported {
			return nil
		}
		return []*Problem{{File: file, Line: line, Msg: msg}}
	}
	var out []*Problem
	for _, m := range te.Errors {
		line, msg := splitLine(m)
		out = append(out, &Problem{File: file, Line: line, Msg: friendlier(msg)})
	}
	return out
}

// firstAlias returns the line of the first alias (*name) under n, or 0.
func firstAlias(n *yaml.Node) int {
	if n.Kind == yaml.AliasNode {
		return n.Line
	}
	for _, c := range n.Content {
		if l := firstAlias(c); l != 0 {
			return l
		}
	}
	return 0
}

// textLine returns the line of the first occurrence of s in data, or 0.
func textLine(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return lineAt(data, i)
}

// lineAt returns the line of data[i].
func lineAt(data []byte, i int) int {
	line := 1
	for j := 0; j < i; {
		if n := lineBreak(data, j); n > 0 {
			line++
			j += n
			continue
		}
		j++
	}
	return line
}

// lineBreak returns the length of the line break at data[i:], or 0. Line
// breaks are what yaml.v3 counts lines by (is_break in yamlprivateh.go):
// LF, CR LF, CR, and U+0085, U+2028, U+2029.
func lineBreak(data []byte, i int) int {
	switch {
	case data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n':
		return 2
	case data[i] == '\r', data[i] == '\n':
		return 1
	case data[i] == 0xC2 && i+1 < len(data) && data[i+1] == 0x85:
		return 2
	case data[i] == 0xE2 && i+2 < len(data) && data[i+1] == 0x80 && (data[i+2] == 0xA8 || data[i+2] == 0xA9):
		return 3
	}
	return 0
}

// yamlLines splits data after each line break.
func yamlLines(data []byte) [][]byte {
	var lines [][]byte
	start := 0
	for i := 0; i < len(data); {
		if n := lineBreak(data, i); n > 0 {
			i += n
			lines = append(lines, data[start:i])
			start = i
			continue
		}
		i++
	}
	if start < len(data) {
		lines = append(lines, data[start:])
	}
	return lines
}

// parserProblems are the messages of yaml.v3's parser, as opposed to its
// scanner. For these yaml.v3 reports the 0-based line of the enclosing
// collection's start instead of the line of the problem, and no line at all
// when that is the first line (https://github.com/go-yaml/yaml/issues/1066).
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %YAML directive":        true,
	"found duplicate %TAG directive":         true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// nearLines is how many lines after the enclosing collection's start are
// tried one by one to locate a syntax error, before a binary search.
const nearLines = 64

// syntaxLine returns the 1-based line of a YAML syntax error that yaml.v3
// reported at line (0 when it gave none).
func syntaxLine(data []byte, msg string, line int) int {
	// yaml.v3 puts the end of the stream on the line after the last one.
	return min(max(findSyntaxLine(data, msg, line), 1), lastLine(data))
}

// lastLine returns the number of the file's last line (1 for an empty file).
func lastLine(data []byte) int { return max(len(yamlLines(data)), 1) }

func findSyntaxLine(data []byte, msg string, line int) int {
	if sm := anchorProblem.FindStringSubmatch(msg); sm != nil && line == 0 {
		return textLine(data, "*"+sm[2])
	}
	if !parserProblems[msg] {
		if line == 0 {
			// Errors of the reader ("control characters are not allowed",
			// "invalid leading UTF-8 octet") come without a line.
			return badByteLine(data)
		}
		return line
	}
	line++ // the collection's start, 1-based
	// The problem is at or after that start: it is on the first line whose
	// prefix of the file fails with the same message. The lines near the
	// start are tried in turn, then the rest by bisection (a longer prefix
	// that holds the problem fails the same way, whatever follows).
	lines := yamlLines(data)
	ends := make([]int, len(lines)+1) // ends[k]: bytes in lines 1..k
	for k, l := range lines {
		ends[k+1] = ends[k] + len(l)
	}
	fails := func(k int) bool {
		var n yaml.Node
		err := yaml.Unmarshal(data[:ends[k]], &n)
		return err != nil && strings.HasSuffix(err.Error(), msg)
	}
	for k := line; k <= min(len(lines), line+nearLines-1); k++ {
		if fails(k) {
			return k
		}
	}
	lo, hi := line+nearLines, len(lines)
	if lo > hi || !fails(hi) {
		return line
	}
	for lo < hi {
		if mid := (lo + hi) / 2; fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// badByteLine returns the line of the first byte that YAML does not accept
// (a control character or invalid UTF-8), or 1 when there is none.
func badByteLine(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 || r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return lineAt(data, i)
		}
		i += size
	}
	return 1
}

var cannotDecode = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")

// friendlier rewords yaml.v3's type errors in the file's terms.
func friendlier(m string) string {
	sm := cannotDecode.FindStringSubmatch(m)
	if sm == nil {
		return m
	}
	found := map[string]string{
		"int": "a whole number", "float": "a number", "bool": "true or false",
		"seq": "a list", "map": "a mapping", "timestamp": "a date", "binary": "binary data",
	}[sm[1]]
	switch {
	case sm[1] == "str":
		found = fmt.Sprintf("%q", sm[2])
	case found == "":
		found = "!!" + sm[1]
	}
	if sm[1] != "str" && sm[2] != "" {
		found = fmt.Sprintf("%s (%s)", found, sm[2])
	}
	want := sm[3]
	switch {
	case strings.HasPrefix(want, "[]"):
		want = "a list"
	case strings.HasPrefix(want, "map["), strings.HasPrefix(want, "config."):
		want = "a mapping"
	case strings.HasPrefix(want, "int"), strings.HasPrefix(want, "uint"):
		want = "a whole number"
	case strings.HasPrefix(want, "float"):
		want = "a number"
	case want == "bool":
		want = "true or false"
	case want == "string":
		want = "a string"
	}
	return fmt.Sprintf("found %s where %s is expected", found, want)
}

// sections names each mapping type as messages call it.
var sections = map[reflect.Type]string{
	reflect.TypeFor[Config]():      "at the top level",
	reflect.TypeFor[Admin]():       "in admin",
	reflect.TypeFor[ListenerTLS](): "in tls",
	reflect.TypeFor[Certificate](): "in a certificate",
	reflect.TypeFor[Limits]():      "in limits",
	reflect.TypeFor[RateLimit]():   "in rate_limit",
	reflect.TypeFor[AccessLog]():   "in access_log",
	reflect.TypeFor[Notify]():      "in notify",
	reflect.TypeFor[Webhook]():     "in a webhook",
	reflect.TypeFor[Route]():       "in a route",
	reflect.TypeFor[Match]():       "in match",
	reflect.TypeFor[Version]():     "in a version",
	reflect.TypeFor[UpstreamTLS](): "in tls",
	reflect.TypeFor[Sticky]():      "in sticky",
	reflect.TypeFor[Rule]():        "in a rule",
	reflect.TypeFor[Rollback]():    "in rollback",
	reflect.TypeFor[Step]():        "in a step",
	reflect.TypeFor[Analysis]():    "in analysis",
	reflect.TypeFor[HealthCheck](): "in health_check",
	reflect.TypeFor[Outlier]():     "in outlier",
	reflect.TypeFor[Timeouts]():    "in timeouts",
	reflect.TypeFor[Retries]():     "in retries",
	reflect.TypeFor[Mirror]():      "in mirror",
}

// yamlKeys lists the YAML keys of struct type t, in declaration order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if k := yamlKey(f); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// yamlKey returns the key of field f, or "" when it has none.
func yamlKey(f reflect.StructField) string {
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if k == "-" || !f.IsExported() {
		return ""
	}
	return k
}

// field returns the field of struct type t whose key is k.
func field(t reflect.Type, k string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if k != "" && yamlKey(f) == k {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// maxFormChecks bounds the nodes checkForm visits: aliases can make a small
// file a large tree (a "billion laughs").
const maxFormChecks = 1 << 20

// checkForm walks n alongside type t the way yaml.v3 decodes it, and reports
// what yaml.v3 does not, or not all at once:
//
//   - unknown keys, naming the keys expected there;
//   - duplicate keys (yaml.v3 reports one mapping's and then skips decoding
//     all of that mapping), and keys that are lists or mappings; checkForm
//     removes them from n, so that the rest of the file is still decoded
//     and checked;
//   - a number with a fraction where a whole number is expected (yaml.v3
//     truncates 1.5 to 1);
//   - an empty (null) key in a mapping of names (yaml.v3 drops it).
func checkForm(file string, n *yaml.Node, t reflect.Type) []*Problem {
	var probs []*Problem
	add := func(n *yaml.Node, msg string) {
		probs = append(probs, &Problem{File: file, Line: n.Line, Msg: msg})
	}
	budget := maxFormChecks
	// The anchors whose values are being walked: an alias to one of them
	// is inside its own anchor's value (&a {<<: *a}), a cycle that yaml.v3
	// reports with the anchor's line ("value contains itself"); followed,
	// it would recurse until the stack overflows.
	walking := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node, t reflect.Type)
	// walkMerge follows a merge key (<<: *defaults), whose value is a
	// mapping or a list of mappings merged into the mapping it is in; it
	// refuses what yaml.v3's decoder.merge refuses, with a line.
	walkMerge := func(k, v *yaml.Node, t reflect.Type) {
		isMap := func(n *yaml.Node) bool {
			return n.Kind == yaml.MappingNode || n.Kind == yaml.AliasNode && (n.Alias == nil || n.Alias.Kind == yaml.MappingNode)
		}
		ok := isMap(v)
		if v.Kind == yaml.SequenceNode {
			ok = true
			for _, e := range v.Content {
				ok = ok && isMap(e)
			}
		}
		if !ok {
			add(k, "the merge key << needs a mapping or a list of mappings, such as <<: *defaults")
			return
		}
		if v.Kind != yaml.SequenceNode {
			walk(v, t)
			return
		}
		for _, e := range v.Content {
			walk(e, t)
		}
	}
	walk = func(n *yaml.Node, t reflect.Type) {
		if n == nil {
			return
		}
		if budget--; budget == 0 {
			add(n, "the file expands to too many values (through aliases); write them out")
		}
		if budget <= 0 {
			return
		}
		if n.Kind == yaml.AliasNode {
			if n.Alias == nil || walking[n.Alias] {
				return
			}
			walking[n.Alias] = true
			walk(n.Alias, t)
			delete(walking, n.Alias)
			return
		}
		if reflect.PointerTo(t).Implements(unmarshalerType) {
			return // Duration, Percent, Pause check themselves
		}
		if n.Kind == yaml.MappingNode {
			dropBadKeys(n, add)
		}
		switch t.Kind() {
		case reflect.Pointer:
			walk(n, t.Elem())
		case reflect.Struct:
			if n.Kind != yaml.MappingNode {
				return
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if isMerge(k) {
					walkMerge(k, v, t)
					continue
				}
				name := k.Value
				if k.Kind == yaml.AliasNode && k.Alias != nil {
					name = k.Alias.Value
				}
				f, ok := field(t, name)
				if !ok {
					add(k, fmt.Sprintf("unknown key %q %s; expected one of: %s", name, sections[t], strings.Join(yamlKeys(t), ", ")))
					continue
				}
				walk(v, f.Type)
			}
		case reflect.Slice:
			if n.Kind == yaml.SequenceNode {
				for _, e := range n.Content {
					walk(e, t.Elem())
				}
			}
		case reflect.Map:
			if n.Kind != yaml.MappingNode {
				return
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if isMerge(k) {
					walkMerge(k, n.Content[i+1], t)
					continue
				}
				if k.ShortTag() == "!!null" {
					add(k, fmt.Sprintf("empty key %q: the keys of this mapping are names, such as a version's", k.Value))
				}
				walk(n.Content[i+1], t.Elem())
			}
		case reflect.String:
			if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!binary" {
				add(n, "found !!binary data where text is expected")
			}
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!float" {
				return
			}
			// Leave to yaml.v3 what it refuses itself (.nan, .inf, too
			// large); it takes -.inf as the smallest int64.
			v := strings.NewReplacer("_", "", ".inf", "inf", ".Inf", "inf", ".INF", "inf").Replace(n.Value)
			if f, err := strconv.ParseFloat(v, 64); err == nil && f <= math.MaxInt64 {
				add(n, fmt.Sprintf("found the number %s where a whole number is expected", n.Value))
			}
		}
	}
	walk(n, t)
	return probs
}

// dropBadKeys reports the keys of mapping n that are lists or mappings, and
// those that repeat an earlier key, and removes them (with their values) so
// that yaml.v3 does not report them again or stop at them.
func dropBadKeys(n *yaml.Node, add func(*yaml.Node, string)) {
	first := map[string]*yaml.Node{}
	out := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		target := k
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			target = k.Alias
		}
		switch {
		case target.Kind != yaml.ScalarNode:
			add(k, "a key must be a name, not a list or a mapping")
			continue
		case !isMerge(k):
			if f, dup := first[target.Value]; dup {
				add(k, fmt.Sprintf("duplicate key %q, first set on line %d: keep one", target.Value, f.Line))
				continue
			}
			first[target.Value] = k
		}
		out = append(out, k, n.Content[i+1])
	}
	n.Content = out
}

// isMerge reports whether k is YAML's merge key, <<.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}
