package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/veer-proxy/veer/config"
)

func TestRateLimiterBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(config.RateLimit{RequestsPerSecond: 2, Burst: 3}, now)
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if ok, _ := l.allow(a, now); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i)
		}
	}
	ok, wait := l.allow(a, now)
	if ok || wait != 500*time.Millisecond {
		t.Errorf("fourth request: allowed %v, wait %v; want refused, 500ms (2 per second)", ok, wait)
	}
	if ok, _ := l.allow(netip.MustParseAddr("192.0.2.2"), now); !ok {
		t.Errorf("another client was refused: buckets are per client")
	}
	if ok, _ := l.allow(a, now.Add(500*time.Millisecond)); !ok {
		t.Errorf("refused after the wait it was given")
	}
	// Refused requests take no token: a client hammering at the limit
	// still gets one request per 500ms.
	for range 10 {
		l.allow(a, now.Add(600*time.Millisecond))
	}
	if ok, _ := l.allow(a, now.Add(1000*time.Millisecond)); !ok {
		t.Errorf("refused requests used up tokens")
	}
}

func TestRateLimiterForgetsIdleClients(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(config.RateLimit{RequestsPerSecond: 10, Burst: 10}, now)
	for i := range 500 {
		l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
	}
	if n := l.size(); n != 500 {
		t.Fatalf("%d clients remembered, want 500", n)
	}
	busy := netip.MustParseAddr("10.9.9.9")
	later := now.Add(rateSweepEvery)
	for range 10 { // a client still inside its burst at the sweep
		l.allow(busy, later.Add(-time.Millisecond))
	}
	for i := range rateShards { // touch every shard after the sweep interval
		for j := 0; ; j++ {
			a := netip.AddrFrom4([4]byte{172, 16, byte(j >> 8), byte(j)})
			if shardOf(a) == i {
				l.allow(a, later)
				break
			}
		}
	}
	if n := l.size(); n > rateShards+1 {
		t.Errorf("%d clients remembered after the sweep, want at most the %d just seen and the busy one", n, rateShards+1)
	}
	if ok, _ := l.allow(busy, later); ok {
		t.Errorf("the busy client's bucket was forgotten while it was empty")
	}
}

func TestClientKeyIPv6Prefix(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1:2:aaaa::1")
	b := netip.MustParseAddr("2001:db8:1:2:bbbb::2")
	c := netip.MustParseAddr("2001:db8:1:3::1")
	pa, _ := a.Prefix(64)
	pb, _ := b.Prefix(64)
	pc, _ := c.Prefix(64)
	if pa.Addr() != pb.Addr() || pa.Addr() == pc.Addr() {
		t.Errorf("/64 keys: %v %v %v", pa, pb, pc)
	}
}

func TestForwardedClient(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	peer := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"none", nil, "10.0.0.1"},
		{"one client", []string{"203.0.113.9"}, "203.0.113.9"},
		{"through trusted hops", []string{"203.0.113.9, 10.1.1.1, 10.2.2.2"}, "203.0.113.9"},
		{"a forged left part is not believed", []string{"198.51.100.1, 203.0.113.9"}, "203.0.113.9"},
		{"several lines", []string{"198.51.100.1", "203.0.113.9, 10.1.1.1"}, "203.0.113.9"},
		{"with ports", []string{"[2001:db8::1]:443, 203.0.113.9:5000"}, "203.0.113.9"},
		{"garbage stops at the hop that added it", []string{"203.0.113.9, garbage, 10.1.1.1"}, "10.1.1.1"},
		{"all trusted", []string{"10.3.3.3, 10.1.1.1"}, "10.3.3.3"},
		{"IPv4-mapped", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lines [][]byte
			for _, l := range tt.lines {
				lines = append(lines, []byte(l))
			}
			if got := forwardedClient(peer, lines, trusted); got.String() != tt.want {
				t.Errorf("client = %v, want %s", got, tt.want)
			}
		})
	}
}

func TestRateLimitThroughVeer(t *testing.T) {
	be := newBackend(t, "blue", nil)
	untrusted := startVeer(t, "rate_limit: {requests_per_second: 1, burst: 2}\n"+oneVersion("", be.addr))
	trusted := startVeer(t, "trusted_proxies: [127.0.0.0/8]\nrate_limit: {requests_per_second: 1, burst: 2}\n"+oneVersion("", be.addr))

	codes := func(v *testVeer, n int, headers ...string) (string, string) {
		var got []string
		retry := ""
		for range n {
			resp := v.get(t, "/", headers...)
			got = append(got, itoa(resp.StatusCode()))
			if resp.StatusCode() == 429 {
				retry = string(resp.Header.Peek("Retry-After"))
			}
		}
		return strings.Join(got, " "), retry
	}
	if got, retry := codes(untrusted, 4); got != "200 200 429 429" || retry != "1" {
		t.Errorf("untrusted: %s, Retry-After %q; want 200 200 429 429 and 1", got, retry)
	}
	// X-Forwarded-For from an untrusted peer changes nothing.
	if got, _ := codes(untrusted, 2, "X-Forwarded-For: 203.0.113.77"); got != "429 429" {
		t.Errorf("untrusted, forged X-Forwarded-For: %s, want 429 429", got)
	}
	// From a trusted proxy, each forwarded client has its own bucket.
	if got, _ := codes(trusted, 3, "X-Forwarded-For: 203.0.113.1"); got != "200 200 429" {
		t.Errorf("trusted, client 1: %s", got)
	}
	if got, _ := codes(trusted, 3, "X-Forwarded-For: 203.0.113.2"); got != "200 200 429" {
		t.Errorf("trusted, client 2: %s", got)
	}
	if n := untrusted.metric(t, "veer_requests_total", "code", "2xx") + untrusted.metric(t, "veer_requests_total", "code", "4xx"); n != 2 {
		t.Errorf("veer_requests_total = %v: refused requests are not the version's", n)
	}
}

func itoa(n int) string {
	const digits = "0123456789"
	if n < 10 {
		return digits[n : n+1]
	}
	return itoa(n/10) + digits[n%10:n%10+1]
}
