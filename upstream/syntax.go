package upstream

import (
	"bytes"
	"errors"
	"fmt"
)

// Fields scans the field lines of an HTTP/1.1 message head strictly, by
// RFC 9112 section 5 and RFC 9110 section 5.5: every line ends in CRLF; a
// name is one or more tchar followed at once by ":" (no white space before
// the colon); a value holds only HTAB, SP, VCHAR and obs-text; no line
// starts with white space (obsolete line folding); nothing follows the
// empty line. fasthttp tolerates several of these (folding, white space
// before a colon in responses, spaces inside names, bare LF), and a peer
// that reads them differently is how requests are smuggled, so veer
// checks the wire bytes itself.
//
// Use it as: f := Fields{Block: b}; for f.Next() { f.Name, f.Value }; then
// f.Err. It allocates nothing. Not safe for concurrent use.
type Fields struct {
	// Block is the field section: the field lines and the empty line
	// after them (fasthttp's RawHeaders). Next consumes it.
	Block []byte
	// Name and Value are the current field (Value without surrounding
	// white space); they point into Block.
	Name, Value []byte
	// Err is the first problem found, nil at a clean end.
	Err error
}

// Next moves to the next field; false at the end or on a problem (Err).
func (f *Fields) Next() bool {
	if f.Err != nil || len(f.Block) == 0 {
		return false
	}
	i := bytes.IndexByte(f.Block, '\n')
	if i < 0 {
		return f.fail(errNoLineEnd)
	}
	if i == 0 || f.Block[i-1] != '\r' {
		return f.fail(errBareLF)
	}
	line := f.Block[:i-1]
	f.Block = f.Block[i+1:]
	if len(line) == 0 {
		if len(f.Block) != 0 {
			return f.fail(errAfterEnd)
		}
		return false
	}
	if line[0] == ' ' || line[0] == '\t' {
		return f.fail(errFolding)
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return f.fail(errNoColon)
	}
	name := line[:colon]
	if len(name) == 0 {
		return f.fail(errEmptyName)
	}
	for _, c := range name {
		if !IsTokenChar(c) {
			if c == ' ' || c == '\t' {
				return f.fail(errSpaceInName)
			}
			return f.fail(fmt.Errorf("byte %#02x in the field name %q", c, name))
		}
	}
	value := trimOWS(line[colon+1:])
	for _, c := range value {
		if !isValueChar(c) {
			return f.fail(fmt.Errorf("control byte %#02x in the value of %s", c, name))
		}
	}
	f.Name, f.Value = name, value
	return true
}

func (f *Fields) fail(err error) bool {
	f.Err = err
	f.Name, f.Value = nil, nil
	return false
}

var (
	errNoLineEnd   = errors.New("a field line does not end")
	errBareLF      = errors.New("a line ends in a bare LF, not CRLF")
	errAfterEnd    = errors.New("bytes after the empty line that ends the fields")
	errFolding     = errors.New("obsolete line folding (a line starts with white space)")
	errNoColon     = errors.New("a field line without a colon")
	errEmptyName   = errors.New("a field line with an empty name")
	errSpaceInName = errors.New("white space in a field name or before its colon")
)

// tokenChars are the tchar of RFC 9110 section 5.6.2.
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// IsTokenChar reports whether c may appear in a token (a method or a
// field name).
func IsTokenChar(c byte) bool { return tokenChars[c] }

// isValueChar: HTAB, SP, VCHAR and obs-text (RFC 9110 section 5.5).
func isValueChar(c byte) bool { return c == '\t' || (c >= ' ' && c != 0x7f) }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// IsDigits reports whether b is one or more ASCII digits, at most 18 (a
// Content-Length that fits an int64 with room to spare).
func IsDigits(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// CheckResponseHead checks a response head (status line, fields and the
// empty line) for what would make its framing ambiguous: an HTTP version
// other than 1.0 and 1.1, a malformed status line, any field line Fields
// rejects, more than one Content-Length or one that is not a number,
// Transfer-Encoding other than one final "chunked", Transfer-Encoding in
// an HTTP/1.0 response, and Transfer-Encoding with Content-Length.
func CheckResponseHead(head []byte) error {
	i := bytes.Index(head, crlf)
	if i < 0 {
		return errNoLineEnd
	}
	line := head[:i]
	// status-line = HTTP-version SP status-code SP [ reason-phrase ]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') || line[8] != ' ' {
		return fmt.Errorf("status line %q is not HTTP/1.0 or HTTP/1.1", clip(line))
	}
	http10 := line[7] == '0'
	code := line[9:12]
	if !IsDigits(code) || code[0] == '0' {
		return fmt.Errorf("status line %q has no three-digit status", clip(line))
	}
	if len(line) > 12 {
		if line[12] != ' ' {
			return fmt.Errorf("status line %q has no three-digit status", clip(line))
		}
		for _, c := range line[13:] {
			if !isValueChar(c) {
				return fmt.Errorf("control byte %#02x in the status line", c)
			}
		}
	}
	var cl, te int
	f := Fields{Block: head[i+2:]}
	for f.Next() {
		switch {
		case bytes.EqualFold(f.Name, hdrContentLength):
			cl++
			if cl > 1 {
				return errors.New("more than one Content-Length")
			}
			if !IsDigits(f.Value) {
				return fmt.Errorf("Content-Length %q is not a number", clip(f.Value))
			}
		case bytes.EqualFold(f.Name, hdrTransferEncoding):
			te++
			if te > 1 {
				return errors.New("more than one Transfer-Encoding")
			}
			if !bytes.EqualFold(f.Value, strChunked) {
				return fmt.Errorf("Transfer-Encoding %q is not chunked", clip(f.Value))
			}
		}
	}
	if f.Err != nil {
		return f.Err
	}
	if te > 0 && cl > 0 {
		return errors.New("both Transfer-Encoding and Content-Length")
	}
	if te > 0 && http10 {
		return errors.New("Transfer-Encoding in an HTTP/1.0 response")
	}
	return nil
}

var (
	crlf                = []byte("\r\n")
	hdrContentLength    = []byte("Content-Length")
	hdrTransferEncoding = []byte("Transfer-Encoding")
	strChunked          = []byte("chunked")
)

// clip shortens b for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
