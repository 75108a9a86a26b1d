package tlsterm

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// RedirectHandler answers every request of the plain-HTTP redirect
// listener with 308 Permanent Redirect to the same host and request target
// over https (308 keeps the method and body, unlike 301). httpsPort is the
// port put in Location; "443" or "" leaves it out. A request without a
// usable Host is a 400: there is nowhere to send it.
func RedirectHandler(httpsPort string) fasthttp.RequestHandler {
	suffix := []byte(nil)
	if httpsPort != "" && httpsPort != "443" {
		suffix = []byte(":" + httpsPort)
	}
	return func(ctx *fasthttp.RequestCtx) {
		host := ctx.Request.Header.Host()
		uri := ctx.Request.Header.RequestURI()
		if len(uri) == 0 || uri[0] != '/' { // absolute-form: its authority is the host
			u := ctx.Request.URI()
			host, uri = u.Host(), u.RequestURI()
		}
		host = stripPort(host)
		if !validHost(host) {
			ctx.Error("veer: this listener redirects to https and needs a Host header\n", fasthttp.StatusBadRequest)
			return
		}
		var buf [512]byte
		loc := append(buf[:0], "https://"...)
		loc = append(loc, host...)
		loc = append(loc, suffix...)
		if len(uri) == 0 {
			uri = []byte("/")
		}
		loc = append(loc, uri...)
		ctx.Response.Header.SetBytesV(fasthttp.HeaderLocation, loc)
		ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
		ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
		ctx.SetBodyString("veer: use https\n")
	}
}

// stripPort drops a :port from a Host value ([v6]:port keeps its brackets).
func stripPort(h []byte) []byte {
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && bytes.IndexByte(h[i:], ']') < 0 {
		return h[:i]
	}
	return h
}

// validHost accepts a host name or an IP literal: letters, digits, '-',
// '.', '_' and, inside brackets, ':' (no '/', '@' or '\' that would make
// Location point elsewhere than the host the client asked for).
func validHost(h []byte) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	if h[0] == '[' {
		if h[len(h)-1] != ']' {
			return false
		}
		for _, c := range h[1 : len(h)-1] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return false
			}
		}
		return len(h) > 2
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}
