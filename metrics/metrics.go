// Package metrics defines veer's Prometheus metrics with SPEC's names and
// labels. Label children are resolved once, when a routing table is
// compiled (Version), never per request.
package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/veer-proxy/veer/sock"
)

// Failure reasons of veer_upstream_failures_total.
const (
	FailConnect   = 0
	FailTimeout   = 1
	FailReset     = 2
	FailNoBackend = 3
	numFailures   = 4
)

// FailureReasons are the label values of the reasons above, by index.
var FailureReasons = [numFailures]string{"connect", "timeout", "reset", "no-backend"}

// codeClasses are the label values of veer_requests_total's code, by status/100.
var codeClasses = [6]string{"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Metrics holds veer's registry and metric vectors. Safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	failures       *prometheus.CounterVec
	weight         *prometheus.GaugeVec
	Rollbacks      *prometheus.CounterVec
	BackendHealthy *prometheus.GaugeVec
	Reloads        *prometheus.CounterVec
	Revision       *prometheus.GaugeVec
	WindowErrors   *prometheus.GaugeVec
	WindowP99      *prometheus.GaugeVec
	Panics         prometheus.Counter
	MirrorDropped  prometheus.Counter
	mirror         *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	rejectedByCode map[int]prometheus.Counter
}

// RejectedCodes are the statuses veer answers itself to requests it turns
// away before routing (framing, limits, timeouts, rate limit).
var RejectedCodes = []int{400, 405, 408, 413, 414, 417, 429, 431, 505}

// Rejected counts a request veer answered itself with code before routing it.
func (m *Metrics) Rejected(code int) {
	if c, ok := m.rejectedByCode[code]; ok {
		c.Inc()
		return
	}
	m.rejectedByCode[400].Inc()
}

// New registers veer's metrics (and the Go and process collectors) in a
// fresh registry.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	rv := []string{"route", "version"}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "veer_requests_total", Help: "Requests answered, by route, version and status class."},
		[]string{"route", "version", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "veer_request_duration_seconds", Help: "Time from receiving a request to having its upstream answer.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, rv)
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "veer_upstream_failures_total", Help: "Upstream failures by reason (connect, timeout, reset, no-backend)."},
		[]string{"route", "version", "reason"})
	m.weight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "veer_route_weight_percent", Help: "Current weight of each version, in percent."}, rv)
	m.Rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "veer_rollbacks_total", Help: "Rollbacks by reason (error-rate, latency, analysis, manual)."},
		[]string{"route", "version", "reason"})
	m.BackendHealthy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "veer_backend_healthy", Help: "1 when the backend takes traffic, 0 when it is down or ejected."},
		[]string{"route", "version", "backend"})
	m.Reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "veer_config_reloads_total", Help: "Config reloads by result (success, failure)."}, []string{"result"})
	m.Revision = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "veer_route_revision", Help: "Current revision number of each route."}, []string{"route"})
	m.WindowErrors = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "veer_window_error_rate_percent", Help: "Error rate over the rollback window, as the rollback judges it."}, rv)
	m.WindowP99 = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "veer_window_p99_seconds", Help: "p99 latency over the rollback window."}, rv)
	m.Panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "veer_panics_total", Help: "Recovered panics in request handlers and background loops (each is a bug)."})
	m.MirrorDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "veer_mirror_dropped_total", Help: "Mirrored requests dropped because the mirror queue was full."})
	m.mirror = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "veer_mirror_requests_total", Help: "Mirrored copies sent, by route, mirror version and status class (answers are discarded)."},
		[]string{"route", "version", "code"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "veer_rejected_requests_total", Help: "Requests veer turned away before routing (malformed framing, limits, timeouts, rate limit), by status."},
		[]string{"code"})
	m.rejectedByCode = map[int]prometheus.Counter{}
	for _, c := range RejectedCodes {
		m.rejectedByCode[c] = m.rejected.WithLabelValues(strconv.Itoa(c))
	}
	m.Registry.MustRegister(m.rejected, m.mirror, m.requests, m.duration, m.failures, m.weight, m.Rollbacks, m.BackendHealthy,
		m.Reloads, m.Revision, m.WindowErrors, m.WindowP99, m.Panics, m.MirrorDropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "veer_io_batched_calls_total",
			Help: "Socket sends and receives made together with the others of their scheduler round (veer on one P with io_uring; see the README's Command line)."},
			func() float64 { c, _ := sock.BatchCounts(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "veer_io_batches_total",
			Help: "Batches of socket calls handed to the kernel, each in one io_uring_enter (or one plain system call when alone): veer_io_batched_calls_total over this is the average batch."},
			func() float64 { _, b := sock.BatchCounts(); return float64(b) }))
	m.Reloads.WithLabelValues("success")
	m.Reloads.WithLabelValues("failure")
	return m
}

// Version is the resolved children of one route version: the hot path
// touches only these. Safe for concurrent use.
type Version struct {
	codes    [6]prometheus.Counter
	Duration prometheus.Observer
	Failures [numFailures]prometheus.Counter
	Weight   prometheus.Gauge
}

// Version resolves the label children of route/version.
func (m *Metrics) Version(route, version string) *Version {
	v := &Version{
		Duration: m.duration.WithLabelValues(route, version),
		Weight:   m.weight.WithLabelValues(route, version),
	}
	for i := 1; i < len(codeClasses); i++ {
		v.codes[i] = m.requests.WithLabelValues(route, version, codeClasses[i])
	}
	v.codes[0] = v.codes[1]
	for i, r := range FailureReasons {
		v.Failures[i] = m.failures.WithLabelValues(route, version, r)
	}
	return v
}

// Mirror is the resolved children of a route's mirror version.
type Mirror struct{ codes [6]prometheus.Counter }

// Mirror resolves the mirror counters of route/version.
func (m *Metrics) Mirror(route, version string) *Mirror {
	x := &Mirror{}
	for i := 1; i < len(codeClasses); i++ {
		x.codes[i] = m.mirror.WithLabelValues(route, version, codeClasses[i])
	}
	x.codes[0] = x.codes[1]
	return x
}

// Request counts one mirrored copy's answer.
func (x *Mirror) Request(code int) { x.codes[class(code)].Inc() }

func class(code int) int {
	c := code / 100
	if c < 1 || c > 5 {
		c = 5
	}
	return c
}

// Request counts one answered request with status code.
func (v *Version) Request(code int) { v.codes[class(code)].Inc() }

// Forget deletes every child of a route version that no longer exists.
func (m *Metrics) Forget(route, version string) {
	l := prometheus.Labels{"route": route, "version": version}
	m.requests.DeletePartialMatch(l)
	m.mirror.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.weight.DeletePartialMatch(l)
	m.BackendHealthy.DeletePartialMatch(l)
	m.WindowErrors.DeletePartialMatch(l)
	m.WindowP99.DeletePartialMatch(l)
}

// ForgetRoute deletes a removed route's revision gauge.
func (m *Metrics) ForgetRoute(route string) { m.Revision.DeleteLabelValues(route) }
