package proxy

import (
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

// mirrorQueue bounds the copies waiting to be sent: when it is full a copy is
// dropped and counted, so mirroring never slows or fails the real request.
const (
	mirrorQueue   = 1024
	mirrorWorkers = 4
	mirrorTimeout = 10 * time.Second
)

type mirrorJob struct {
	req     *fasthttp.Request
	version *router.Version
	metrics *metrics.Mirror
}

// mirrorer sends copies of requests to a route's mirror version and
// discards the answers (like nginx's mirror module). Safe for concurrent use.
type mirrorer struct {
	jobs    chan mirrorJob
	dropped atomic.Uint64
	m       *metrics.Metrics
	started atomic.Bool
}

func newMirrorer(m *metrics.Metrics) *mirrorer {
	return &mirrorer{jobs: make(chan mirrorJob, mirrorQueue), m: m}
}

// offer copies ctx's request (already rewritten for the upstream) for the
// route's mirror version, unless its body is over max_body_bytes or
// streamed, or the queue is full.
func (mr *mirrorer) offer(ctx *fasthttp.RequestCtx, r *router.Route) {
	if ctx.Request.IsBodyStream() || int64(len(ctx.Request.Body())) > r.Config.Mirror.MaxBodyBytes {
		return
	}
	if mr.started.CompareAndSwap(false, true) {
		for i := 0; i < mirrorWorkers; i++ {
			go mr.work()
		}
	}
	req := fasthttp.AcquireRequest()
	ctx.Request.CopyTo(req)
	select {
	case mr.jobs <- mirrorJob{req: req, version: r.Mirror, metrics: r.MirrorMetrics}:
	default:
		fasthttp.ReleaseRequest(req)
		mr.dropped.Add(1)
		if mr.m != nil {
			mr.m.MirrorDropped.Inc()
		}
	}
}

func (mr *mirrorer) work() {
	resp := fasthttp.AcquireResponse()
	resp.SkipBody = true
	for j := range mr.jobs {
		mr.send(j, resp)
	}
}

func (mr *mirrorer) send(j mirrorJob, resp *fasthttp.Response) {
	defer fasthttp.ReleaseRequest(j.req)
	defer func() {
		if rec := recover(); rec != nil && mr.m != nil {
			mr.m.Panics.Inc()
		}
	}()
	b := j.version.PickBackend(time.Now().UnixNano())
	if b == nil {
		j.metrics.Request(fasthttp.StatusServiceUnavailable)
		return
	}
	setScheme(j.req, b)
	if err := b.Client.DoTimeout(j.req, resp, mirrorTimeout); err != nil {
		status, _ := Classify(err)
		j.metrics.Request(status)
		return
	}
	j.metrics.Request(resp.StatusCode())
}
