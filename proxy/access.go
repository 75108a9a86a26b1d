package proxy

import (
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/accesslog"
	"github.com/veer-proxy/veer/router"
)

// logAccess writes the access log line of an answered request; r, v and b
// may be nil (no route, no backend). Callers check p.AccessLog != nil
// first, so that with access logging off a request pays that nil check and
// nothing else. It allocates nothing: the entry stays on the stack and the
// logger copies what it needs.
func (p *Proxy) logAccess(ctx *fasthttp.RequestCtx, r *router.Route, v *router.Version, b *router.Backend) {
	var e accesslog.Entry
	fillEntry(&e, ctx, r, v, b)
	e.Duration = time.Since(e.Time)
	p.AccessLog.Log(&e)
}

func fillEntry(e *accesslog.Entry, ctx *fasthttp.RequestCtx, r *router.Route, v *router.Version, b *router.Backend) {
	h := &ctx.Request.Header
	e.Time = ctx.Time()
	if a, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		e.Client = a.Unmap()
	}
	e.Method = h.Method()
	e.Path = h.RequestURI()
	e.Proto = h.Protocol()
	e.Host = h.Host()
	e.Referer = h.Referer()
	e.UserAgent = h.UserAgent()
	e.RequestID = h.PeekBytes(hdrReqID)
	e.Status = ctx.Response.StatusCode()
	switch resp := &ctx.Response; {
	case ctx.IsHead():
		e.Bytes = 0
	case resp.IsBodyStream():
		e.Bytes = int64(resp.Header.ContentLength())
		if e.Bytes < 0 {
			e.Bytes = -1
		}
	default:
		e.Bytes = int64(len(resp.Body()))
	}
	if r != nil {
		e.Route = r.Name
	}
	if v != nil {
		e.Version = v.Name
	}
	if b != nil {
		e.Backend = b.Addr
	}
}

// accessEntry is a copy of the request's entry that outlives the handler
// (an upgraded connection logs when it closes).
func (p *Proxy) accessEntry(ctx *fasthttp.RequestCtx, r *router.Route, v *router.Version, b *router.Backend) *accesslog.Entry {
	e := &accesslog.Entry{}
	fillEntry(e, ctx, r, v, b)
	e.Status = fasthttp.StatusSwitchingProtocols
	for _, f := range []*[]byte{&e.Method, &e.Path, &e.Proto, &e.Host, &e.Referer, &e.UserAgent, &e.RequestID} {
		*f = append([]byte(nil), *f...)
	}
	return e
}
