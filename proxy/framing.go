package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/upstream"
)

// Strict framing (issue 5, part 7). veer sits at the edge, where a request
// that two parsers read differently is how one client's bytes become
// another request at the backend (request smuggling: RFC 9112 section 11.2,
// https://portswigger.net/web-security/request-smuggling). fasthttp
// already rejects much of it (duplicate Content-Length and
// Transfer-Encoding, Transfer-Encoding other than chunked or identity,
// Transfer-Encoding on HTTP/1.0, a missing or duplicate Host on HTTP/1.1,
// white space before a request header's colon, control bytes, "GET *",
// malformed chunk sizes), and since v1.78 it closes the connection after a
// request with both Content-Length and Transfer-Encoding. What it
// accepts, and veer does not, is checked here on the wire bytes of the
// head (RawHeaders) before anything is forwarded: both Content-Length and
// Transfer-Encoding, Transfer-Encoding: identity, obsolete line folding,
// bare LF line ends, white space inside field names, HTTP versions other
// than 1.0 and 1.1, invalid Host values, and request targets that are not
// plain origin-form or http(s) absolute-form (fragments, backslashes,
// dot segments, raw non-ASCII, bad percent-encoding, encoded NUL).

// A rejection is a status and the text veer answers with; the connection
// is closed after it (Connection: close) unless keep says otherwise.
type rejection struct {
	status int
	text   string
	keep   bool // the request was well formed; the connection may stay open
}

var (
	rejectVersion   = rejection{status: fasthttp.StatusHTTPVersionNotSupported, text: "veer: only HTTP/1.0 and HTTP/1.1 are served\n"}
	rejectURILong   = rejection{status: fasthttp.StatusRequestURITooLong, text: "veer: request URI too long\n"}
	rejectHeadLarge = rejection{status: fasthttp.StatusRequestHeaderFieldsTooLarge, text: "veer: request header fields too large\n"}
	rejectMethod    = rejection{status: fasthttp.StatusMethodNotAllowed, text: "veer: CONNECT and TRACE are not served\n"}
	rejectTarget    = rejection{status: fasthttp.StatusBadRequest, text: "veer: malformed request target\n"}
	rejectField     = rejection{status: fasthttp.StatusBadRequest, text: "veer: malformed header field\n"}
	rejectCLTE      = rejection{status: fasthttp.StatusBadRequest, text: "veer: both Content-Length and Transfer-Encoding\n"}
	rejectCL        = rejection{status: fasthttp.StatusBadRequest, text: "veer: invalid or repeated Content-Length\n"}
	rejectTE        = rejection{status: fasthttp.StatusBadRequest, text: "veer: Transfer-Encoding other than one chunked\n"}
	rejectTE10      = rejection{status: fasthttp.StatusBadRequest, text: "veer: Transfer-Encoding in an HTTP/1.0 request\n"}
	rejectHost      = rejection{status: fasthttp.StatusBadRequest, text: "veer: missing, repeated or invalid Host\n"}
	rejectExpect    = rejection{status: fasthttp.StatusExpectationFailed, text: "veer: only Expect: 100-continue is understood\n"}
	rejectBodyLarge = rejection{status: fasthttp.StatusRequestEntityTooLarge, text: "veer: request body too large\n"}
	// answerOptions is "OPTIONS *": a question to veer itself, answered 200.
	answerOptions = rejection{status: fasthttp.StatusOK, keep: true}
)

// allowHeader answers a 405.
var allowHeader = []byte("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")

// checkRequest returns nil when the head of req may be forwarded, else how
// veer answers instead, and what the head's field names hold for
// prepareRequest (headerBit; every bit for a head built in code). It
// allocates nothing.
func checkRequest(h *fasthttp.RequestHeader, l *config.Limits) (rej *rejection, has int) {
	proto := h.Protocol()
	http10 := string(proto) == "HTTP/1.0"
	if !http10 && string(proto) != "HTTP/1.1" {
		return &rejectVersion, has
	}
	target := h.RequestURI()
	if len(target) > l.MaxURIBytes {
		return &rejectURILong, has
	}
	raw := h.RawHeaders()
	if len(raw) > l.MaxHeaderBytes {
		return &rejectHeadLarge, has
	}

	var cl, te, host int
	var hostValue []byte
	f := upstream.Fields{Block: raw}
	for f.Next() {
		name := f.Name
		has |= headerBit(name)
		switch len(name) {
		case 4:
			if bytes.EqualFold(name, hdrHost) {
				host++
				hostValue = f.Value
			}
		case 6:
			if bytes.EqualFold(name, hdrExpect) {
				if !bytes.EqualFold(f.Value, str100Continue) {
					return &rejectExpect, has
				}
			}
		case 14:
			if bytes.EqualFold(name, hdrContentLength) {
				cl++
				if cl > 1 || !upstream.IsDigits(f.Value) {
					return &rejectCL, has
				}
			}
		case 17:
			if bytes.EqualFold(name, hdrTransferEncoding) {
				te++
				if te > 1 || !bytes.EqualFold(f.Value, strChunked) {
					return &rejectTE, has
				}
			}
		}
	}
	if f.Err != nil {
		return &rejectField, has
	}
	if len(raw) == 0 { // a request built in code, not read from the wire
		if hostValue = h.Host(); len(hostValue) > 0 {
			host = 1
		}
		has = hasAll
	}
	switch {
	case te > 0 && cl > 0:
		return &rejectCLTE, has
	case te > 0 && http10:
		return &rejectTE10, has
	case host > 1, host == 0 && !http10, host == 1 && !validHost(hostValue, !http10):
		return &rejectHost, has
	}

	method := h.Method()
	switch {
	case string(method) == fasthttp.MethodConnect, string(method) == fasthttp.MethodTrace:
		return &rejectMethod, has
	case len(target) == 1 && target[0] == '*':
		if string(method) == fasthttp.MethodOptions {
			return &answerOptions, has
		}
		return &rejectTarget, has
	case len(target) > 0 && target[0] == '/':
		if !validOriginForm(target) {
			return &rejectTarget, has
		}
	default:
		if !validAbsoluteForm(target) {
			return &rejectTarget, has
		}
	}
	return nil, has
}

var (
	hdrHost             = []byte("Host")
	hdrExpect           = []byte("Expect")
	hdrContentLength    = []byte("Content-Length")
	hdrTransferEncoding = []byte("Transfer-Encoding")
	str100Continue      = []byte("100-continue")
	strChunked          = []byte("chunked")
)

// Character classes of request targets (RFC 3986 section 2, RFC 9112
// section 3.2), as bit flags.
const (
	cPath  = 1 << iota // may appear raw in a path
	cQuery             // may appear raw in a query
	cHost              // may appear in a reg-name host
)

var uriChars = func() (t [256]uint8) {
	set := func(chars string, flags uint8) {
		for i := 0; i < len(chars); i++ {
			t[chars[i]] |= flags
		}
	}
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	set(alnum+"-._~", cPath|cQuery|cHost)  // unreserved
	set("!$&'()*+,;=", cPath|cQuery|cHost) // sub-delims
	set(":@/%", cPath|cQuery)              // pchar and "/"; "%" is checked apart
	set("?", cQuery)                       //
	set("|^[]", cPath|cQuery)              // sent raw by browsers (WHATWG URL path percent-encode set)
	set("{}`\\", cQuery)                   // sent raw by browsers in queries
	set("%", cHost)                        //
	return t
}()

// validOriginForm checks "/path?query": no fragment, no raw space,
// control, quote, angle bracket or non-ASCII byte; in the path no
// backslash, no malformed or NUL percent-encoding and no "." or ".."
// segment (raw or percent-encoded): clients resolve those before sending,
// and a route matched on "/api/../admin" would send the backend elsewhere.
func validOriginForm(t []byte) bool {
	path, query, _ := bytes.Cut(t, []byte("?"))
	return validPath(path) && validQuery(query)
}

func validPath(p []byte) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if uriChars[c]&cPath == 0 {
			return false
		}
		if c == '%' {
			if i+2 >= len(p) || unhex(p[i+1]) < 0 || unhex(p[i+2]) < 0 || (p[i+1] == '0' && p[i+2] == '0') {
				return false
			}
		}
	}
	for seg := range bytes.SplitSeq(p, []byte("/")) {
		if isDotSegment(seg) {
			return false
		}
	}
	return true
}

func validQuery(q []byte) bool {
	for _, c := range q {
		if uriChars[c]&cQuery == 0 {
			return false
		}
	}
	return true
}

// isDotSegment: ".", "..", and their percent-encoded spellings.
func isDotSegment(s []byte) bool {
	dots := 0
	for i := 0; i < len(s); {
		switch {
		case s[i] == '.':
			i++
		case i+2 < len(s) && s[i] == '%' && s[i+1] == '2' && (s[i+2] == 'e' || s[i+2] == 'E'):
			i += 3
		default:
			return false
		}
		dots++
	}
	return dots == 1 || dots == 2
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// validAbsoluteForm checks "http://host[:port]/path?query" (or https).
// Userinfo is tolerated: Handler strips it.
func validAbsoluteForm(t []byte) bool {
	var rest []byte
	switch {
	case len(t) > 7 && bytes.EqualFold(t[:7], []byte("http://")):
		rest = t[7:]
	case len(t) > 8 && bytes.EqualFold(t[:8], []byte("https://")):
		rest = t[8:]
	default:
		return false
	}
	end := bytes.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority := rest[:end]
	if i := bytes.LastIndexByte(authority, '@'); i >= 0 {
		for _, c := range authority[:i] {
			if uriChars[c]&cHost == 0 && c != ':' {
				return false
			}
		}
		authority = authority[i+1:]
	}
	if !validHost(authority, true) {
		return false
	}
	rest = rest[end:]
	if len(rest) > 0 && rest[0] == '?' {
		return validQuery(rest[1:])
	}
	return validOriginForm(rest)
}

// validHost checks a Host value: host [":" port], host a reg-name, an
// IPv4 address or a bracketed IPv6 literal; empty only when !required.
func validHost(h []byte, required bool) bool {
	if len(h) == 0 {
		return !required
	}
	var port []byte
	if h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 2 {
			return false
		}
		for _, c := range h[1:end] {
			if unhex(c) < 0 && c != ':' && c != '.' {
				return false
			}
		}
		rest := h[end+1:]
		if len(rest) > 0 {
			if rest[0] != ':' {
				return false
			}
			port = rest[1:]
			if len(port) == 0 {
				return false
			}
		}
	} else {
		name := h
		if i := bytes.LastIndexByte(h, ':'); i >= 0 {
			name, port = h[:i], h[i+1:]
			if len(port) == 0 {
				return false
			}
		}
		if len(name) == 0 {
			return false
		}
		for _, c := range name {
			if uriChars[c]&cHost == 0 {
				return false
			}
		}
	}
	return len(port) <= 5 && (len(port) == 0 || upstream.IsDigits(port))
}
