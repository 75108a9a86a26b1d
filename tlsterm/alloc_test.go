//go:build !race

package tlsterm

import (
	"crypto/tls"
	"testing"
)

func TestGetCertificateAllocatesNothing(t *testing.T) {
	dir := t.TempDir()
	a, _ := writePair(t, dir, "a", "a.example.com")
	w, _ := writePair(t, dir, "w", "*.example.org")
	s, err := New([]Pair{a, w}, Options{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	hellos := []*tls.ClientHelloInfo{{ServerName: "a.example.com"}, {ServerName: "x.example.org"}, {}}
	for _, h := range hellos {
		if n := testing.AllocsPerRun(100, func() { s.GetCertificate(h) }); n != 0 {
			t.Errorf("GetCertificate(%q): %v allocations, want 0", h.ServerName, n)
		}
	}
}
