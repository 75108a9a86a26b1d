package main

// scenario is one workload, run against every proxy in turn.
type scenario struct {
	Name  string
	Title string // short, for the table and chart
	What  string // one sentence for the README and results.md
	Conns int    // wrk connections
	Path  string
	Host  string   // Host header; "" means bench.local
	Heads []string // extra wrk -H headers
	Lua   string   // wrk script run before the common done() report
	// Routes is how many routes the proxies' configs have; the requests go
	// to the last one's host.
	Routes int
	// Sticky: the proxies pick the version by hashing X-User-ID (veer's
	// sticky.header; nginx hash ... consistent; HAProxy balance hdr).
	Sticky bool
	// Idle: no wrk; open idle keep-alive connections and measure the
	// memory each one costs.
	Idle bool
	// UpstreamOnly: wrk straight at the upstream, the ceiling no proxy can
	// pass on this machine.
	UpstreamOnly bool
}

const benchHost = "bench.local"

func (s *scenario) host() string {
	if s.Host != "" {
		return s.Host
	}
	return benchHost
}

func (s *scenario) routes() int { return max(s.Routes, 1) }

var scenarios = []*scenario{
	{Name: "upstream", Title: "upstream alone", Conns: 64, Path: "/", UpstreamOnly: true,
		What: "wrk straight at the upstream (small GET, 64 keep-alive connections): the ceiling, since wrk and the upstream share a CPU in every run."},
	{Name: "get64", Title: "GET 64 conns", Conns: 64, Path: "/",
		What: "small GET (13-byte answer) over 64 keep-alive connections."},
	{Name: "get1k", Title: "GET 1k conns", Conns: 1000, Path: "/",
		What: "the same over 1,000 keep-alive connections."},
	{Name: "idle10k", Title: "idle conns", Idle: true, Path: "/",
		What: "opens N keep-alive connections (10,000 by default), sends one request on each and leaves them open: resident memory growth divided by N."},
	{Name: "newconn", Title: "new conn per req", Conns: 64, Path: "/", Heads: []string{"Connection: close"},
		What: "small GET with `Connection: close`: one TCP connection per request (accept, parse, close)."},
	{Name: "resp10k", Title: "10 KiB answers", Conns: 64, Path: "/size/10k",
		What: "GET answered with 10 KiB, 64 connections."},
	{Name: "resp1m", Title: "1 MiB answers", Conns: 64, Path: "/size/1m",
		What: "GET answered with 1 MiB, 64 connections."},
	{Name: "post64k", Title: "64 KiB POSTs", Conns: 64, Path: "/",
		Lua:  "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 65536)\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n",
		What: "POST with a 64 KiB body and a small answer, 64 connections."},
	{Name: "canary", Title: "sticky canary 10%", Conns: 64, Path: "/", Sticky: true,
		Lua: `local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, {["Host"] = "` + benchHost + `", ["X-User-ID"] = "user-" .. (counter % 100000)})
end
`,
		What: "10% canary chosen by a sticky header: every request carries `X-User-ID` from a counter over 100,000 users, which the proxy hashes to a version."},
	{Name: "routes1k", Title: "1,000 routes", Conns: 64, Path: "/", Routes: 1000, Host: "r999.bench.local",
		What: "a config of 1,000 host routes (each with its own blue/canary backends); requests go to the last route's host: the cost of matching."},
}

func scenarioNames() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.Name
	}
	return out
}

func findScenario(name string) *scenario {
	for _, s := range scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}
