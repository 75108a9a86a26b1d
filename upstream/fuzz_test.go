package upstream

import (
	"bufio"
	"bytes"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzCheckResponseHead: a response head CheckResponseHead accepts has one
// framing, and fasthttp reads it the same way: it parses, and its body
// length is the Content-Length given, or chunked when Transfer-Encoding
// is, or to the end of the connection when neither is. Seeds are in
// testdata/fuzz/FuzzCheckResponseHead.
func FuzzCheckResponseHead(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\n",
		"HTTP/1.1 204\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		if indexHeadEnd(head, 0) != len(head) || CheckResponseHead(head) != nil {
			return
		}
		var h fasthttp.ResponseHeader
		if err := h.Read(bufio.NewReader(bytes.NewReader(head))); err != nil {
			t.Fatalf("accepted %q, which fasthttp cannot parse: %v", head, err)
		}
		cl, te := -2, false
		fields := Fields{Block: head[bytes.Index(head, crlf)+2:]}
		for fields.Next() {
			switch {
			case bytes.EqualFold(fields.Name, hdrContentLength):
				cl, _ = strconv.Atoi(string(fields.Value))
			case bytes.EqualFold(fields.Name, hdrTransferEncoding):
				te = true
			}
		}
		code := h.StatusCode()
		if code < 200 || code == 204 || code == 304 {
			return // no body, whatever the fields say
		}
		want := cl
		if te {
			want = -1
		}
		if got := h.ContentLength(); got != want && !(want == -2 && got == -2) {
			t.Fatalf("accepted %q: fasthttp frames its body as %d, the fields say %d", head, got, want)
		}
	})
}

// FuzzFields: Fields never panics, and a field it yields is a token name
// and a value of visible characters, spaces and tabs only.
func FuzzFields(f *testing.F) {
	f.Add([]byte("Host: a\r\nX-A: b\r\n\r\n"))
	f.Add([]byte("X: a\r\n b\r\n\r\n"))
	f.Add([]byte("X : a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, block []byte) {
		fl := Fields{Block: block}
		for fl.Next() {
			for _, c := range fl.Name {
				if !IsTokenChar(c) {
					t.Fatalf("name %q", fl.Name)
				}
			}
			for _, c := range fl.Value {
				if !isValueChar(c) {
					t.Fatalf("value %q", fl.Value)
				}
			}
			if len(fl.Value) > 0 && (fl.Value[0] == ' ' || fl.Value[len(fl.Value)-1] == '\t') {
				t.Fatalf("value %q not trimmed", fl.Value)
			}
		}
	})
}
