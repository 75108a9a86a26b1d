package accesslog

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzLines: whatever bytes a client puts in the request, a JSON line is
// one valid JSON object that gives them back (when they are UTF-8), and a
// combined line is one line whose quoted fields hold no raw quote.
func FuzzLines(f *testing.F) {
	f.Add([]byte("/a?b=1"), []byte("curl/8"), []byte("id-1"))
	f.Add([]byte("/\"\\\n\r\t\x00\x7f"), []byte("\xff\xfe"), []byte("a b"))
	f.Add([]byte("/é/\u2028"), []byte(""), []byte("\x1b[31m"))
	quoted := regexp.MustCompile(`"(?:[^"\\]|\\x[0-9A-F]{2})*"`)
	f.Fuzz(func(t *testing.T, path, ua, id []byte) {
		e := entry()
		e.Path, e.UserAgent, e.RequestID = path, ua, id
		line := appendJSON(nil, e)
		if strings.Count(string(line), "\n") != 1 || line[len(line)-1] != '\n' {
			t.Fatalf("JSON: not one line: %q", line)
		}
		var got map[string]any
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("JSON: %v\n%q", err, line)
		}
		if utf8.Valid(path) && got["path"] != string(path) {
			t.Errorf("JSON path: got %q, want %q", got["path"], path)
		}
		c := appendCombined(nil, e)
		if strings.Count(string(c), "\n") != 1 || c[len(c)-1] != '\n' {
			t.Fatalf("combined: not one line: %q", c)
		}
		if n := len(quoted.FindAll(c, -1)); n != 3 {
			t.Errorf("combined: %d well-formed quoted fields, want 3 (request, referer, user agent): %q", n, c)
		}
		for _, b := range c[:len(c)-1] {
			if b < 0x20 || b >= 0x7f {
				t.Fatalf("combined: raw byte %#x in %q", b, c)
			}
		}
	})
}
