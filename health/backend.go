package health

import (
	"sync/atomic"
	"time"
)

// BackendState is the health of one backend that outlives routing tables:
// the active probe's verdict and the passive ejection (Envoy's outlier
// detection: https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier).
// Safe for concurrent use; must not be copied.
type BackendState struct {
	up           atomic.Bool  // active health check verdict (true until a probe says otherwise)
	ejectedUntil atomic.Int64 // unix nanoseconds; 0 = not ejected
	consecutive  atomic.Int32 // consecutive 5xx or connection failures
	ejections    atomic.Int32 // how often it was ejected; grows the ejection time
	probeOK      atomic.Int32 // consecutive successful probes
	probeFail    atomic.Int32 // consecutive failed probes
}

// NewBackendState returns a backend that is up and not ejected.
func NewBackendState() *BackendState {
	s := &BackendState{}
	s.up.Store(true)
	return s
}

// Available reports whether the backend may take requests at now (unix ns).
func (s *BackendState) Available(now int64) bool {
	return s.up.Load() && now >= s.ejectedUntil.Load()
}

// Up reports the active health check's verdict.
func (s *BackendState) Up() bool { return s.up.Load() }

// Ejected reports whether passive ejection holds the backend out at now.
func (s *BackendState) Ejected(now int64) bool { return now < s.ejectedUntil.Load() }

// maxEjectionMultiplier caps the growth of the ejection time (Envoy's
// max_ejection_time defaults to 10 times the base).
const maxEjectionMultiplier = 10

// Failure records a 5xx or a connection failure; it reports whether the
// consecutive count reached threshold (0 = passive ejection off).
func (s *BackendState) Failure(threshold int) bool {
	n := s.consecutive.Add(1)
	return threshold > 0 && int(n) >= threshold
}

// Success records an answer below 500 and clears the consecutive count.
func (s *BackendState) Success() {
	if s.consecutive.Load() != 0 {
		s.consecutive.Store(0)
	}
}

// Eject takes the backend out until now + base × (times ejected so far + 1),
// capped at 10 × base. It returns the ejection's end.
func (s *BackendState) Eject(now int64, base time.Duration) int64 {
	n := s.ejections.Add(1)
	if n > maxEjectionMultiplier {
		n = maxEjectionMultiplier
	}
	until := now + int64(base)*int64(n)
	s.ejectedUntil.Store(until)
	s.consecutive.Store(0)
	return until
}

// Probe records one active health check result and reports whether the
// verdict changed (healthy and unhealthy are the SPEC thresholds).
func (s *BackendState) Probe(ok bool, healthy, unhealthy int) (changed, up bool) {
	if ok {
		s.probeFail.Store(0)
		if n := s.probeOK.Add(1); !s.up.Load() && int(n) >= healthy {
			s.up.Store(true)
			s.ejections.Store(0)
			return true, true
		}
		return false, s.up.Load()
	}
	s.probeOK.Store(0)
	if n := s.probeFail.Add(1); s.up.Load() && int(n) >= unhealthy {
		s.up.Store(false)
		return true, false
	}
	return false, s.up.Load()
}

// SetUp forces the active verdict (used when health checks are turned off).
func (s *BackendState) SetUp(up bool) { s.up.Store(up) }
