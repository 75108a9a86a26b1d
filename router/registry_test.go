package router_test

import (
	"strings"
	"testing"

	"github.com/veer-proxy/veer/config"
	"github.com/veer-proxy/veer/metrics"
	"github.com/veer-proxy/veer/router"
)

// Routes that point at the same server with the same client settings share
// one connection pool; other settings get their own; a reload that drops
// the last user of a pool drops the pool, and backend states stay per
// route, version and address.
func TestRegistrySharesClientsByAddress(t *testing.T) {
	const twoRoutes = `
routes:
  - name: shop
    match: {host: shop.example.com}
    stable: blue
    versions:
      blue:   {backends: ["127.0.0.1:9001", "127.0.0.1:9002"]}
      canary: {backends: ["127.0.0.1:9001"]}
    weights: {blue: 90, canary: 10}
  - name: cart
    match: {host: cart.example.com}
    stable: blue
    versions: {blue: {backends: ["127.0.0.1:9001"]}}
  - name: slow
    match: {host: slow.example.com}
    stable: blue
    timeouts: {response_header: 120s}
    versions: {blue: {backends: ["127.0.0.1:9001"]}}
`
	reg := router.NewRegistry(metrics.New())
	compileWith := func(yaml string) *router.Table {
		t.Helper()
		cfg, err := config.Parse("test.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		tbl, err := router.Compile(cfg, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		reg.Retain(tbl)
		return tbl
	}
	tbl := compileWith(twoRoutes)
	shop, cart, slow := tbl.Routes[0], tbl.Routes[1], tbl.Routes[2]
	if shop.Name != "shop" || cart.Name != "cart" || slow.Name != "slow" {
		t.Fatalf("routes in an unexpected order: %s %s %s", shop.Name, cart.Name, slow.Name)
	}
	a := shop.Versions[0].Backends[0] // shop/blue 127.0.0.1:9001
	if a.Addr != "127.0.0.1:9001" {
		t.Fatalf("first backend is %s", a.Addr)
	}
	same := []*router.Backend{shop.Version("canary").Backends[0], cart.Versions[0].Backends[0]}
	for _, b := range same {
		if b.Client != a.Client {
			t.Errorf("%s: its own client for an address and settings another route already has", b.Addr)
		}
		if b.State == a.State {
			t.Errorf("%s: backend state shared across routes or versions; it must stay per route and version", b.Addr)
		}
	}
	if b := slow.Versions[0].Backends[0]; b.Client == a.Client {
		t.Error("a route with other timeouts shares a client built with different ones")
	}
	if n := reg.Clients(); n != 3 {
		t.Errorf("%d clients, want 3 (9001, 9002, and 9001 with other timeouts)", n)
	}

	// A reload without the slow route drops its pool and keeps the shared one.
	tbl2 := compileWith(twoRoutes[:strings.Index(twoRoutes, "  - name: slow")])
	if n := reg.Clients(); n != 2 {
		t.Errorf("%d clients after dropping the slow route, want 2", n)
	}
	if tbl2.Routes[1].Versions[0].Backends[0].Client != a.Client {
		t.Error("a reload replaced a pool it kept")
	}
	if tbl2.Routes[0].Versions[0].Backends[0].State != a.State {
		t.Error("a reload lost a backend's state")
	}
}
