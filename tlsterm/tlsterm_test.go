package tlsterm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var serial int64

// writePair writes a self-signed certificate for names and its key to dir
// as NAME.pem and NAME-key.pem and returns the pair and the serial.
func writePair(t *testing.T, dir, file string, names ...string) (Pair, int64) {
	t.Helper()
	certPEM, keyPEM, sn := makePair(t, names...)
	p := Pair{CertFile: filepath.Join(dir, file+".pem"), KeyFile: filepath.Join(dir, file+"-key.pem")}
	if err := os.WriteFile(p.CertFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.KeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, sn
}

func makePair(t *testing.T, names ...string) (certPEM, keyPEM []byte, sn int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "test"},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), serial
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestLoadPair(t *testing.T) {
	dir := t.TempDir()
	good, _ := writePair(t, dir, "good", "a.example.com")
	other, _ := writePair(t, dir, "other", "b.example.com")
	notPEM := filepath.Join(dir, "junk.pem")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600)
	tests := []struct {
		name    string
		pair    Pair
		wantErr error // nil: loads
		wantMsg string
	}{
		{name: "good", pair: good},
		{name: "key of another certificate", pair: Pair{good.CertFile, other.KeyFile}, wantErr: ErrKeyMismatch, wantMsg: "is not the key of"},
		{name: "missing certificate", pair: Pair{filepath.Join(dir, "nope.pem"), good.KeyFile}, wantErr: os.ErrNotExist},
		{name: "missing key", pair: Pair{good.CertFile, filepath.Join(dir, "nope.pem")}, wantErr: os.ErrNotExist},
		{name: "not PEM", pair: Pair{notPEM, good.KeyFile}, wantErr: ErrNoCertificate},
		{name: "key as certificate", pair: Pair{good.KeyFile, good.KeyFile}, wantErr: ErrNoCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadPair(tt.pair)
			if tt.wantErr == nil {
				if err != nil || c == nil || c.Leaf == nil {
					t.Fatalf("LoadPair: got %v, %v; want a certificate with its leaf", c, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("LoadPair: got error %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSNIChoice(t *testing.T) {
	dir := t.TempDir()
	def, defSN := writePair(t, dir, "default", "default.example.com")
	shop, shopSN := writePair(t, dir, "shop", "shop.example.com", "www.shop.example.com")
	wild, wildSN := writePair(t, dir, "wild", "*.api.example.com")
	s, err := New([]Pair{def, shop, wild}, Options{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sni  string
		want int64
	}{
		{"", defSN},
		{"shop.example.com", shopSN},
		{"SHOP.Example.COM", shopSN},
		{"shop.example.com.", shopSN},
		{"www.shop.example.com", shopSN},
		{"v1.api.example.com", wildSN},
		{"api.example.com", defSN},      // a wildcard covers one label only
		{"a.v1.api.example.com", defSN}, // ... exactly one
		{"unknown.example.org", defSN},
		{"default.example.com", defSN},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Leaf.SerialNumber.Int64(); got != tt.want {
				t.Errorf("SNI %q: got certificate %d, want %d", tt.sni, got, tt.want)
			}
		})
	}
}

func TestNewRefusesABadPair(t *testing.T) {
	dir := t.TempDir()
	a, _ := writePair(t, dir, "a", "a.example.com")
	b, _ := writePair(t, dir, "b", "b.example.com")
	if _, err := New([]Pair{a, {a.CertFile, b.KeyFile}}, Options{Log: quiet()}); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("New with a mismatched pair: got %v, want ErrKeyMismatch", err)
	}
	if _, err := New(nil, Options{Log: quiet()}); err == nil {
		t.Fatal("New without pairs: got no error")
	}
}

func serialOf(t *testing.T, s *Store, sni string) int64 {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Int64()
}

// TestReloadKeepsTheOldPairWhenTheNewOneIsBad: a pair that does not load
// leaves the old one serving, the others still reload, and a fixed pair
// is taken at the next reload.
func TestReloadKeepsTheOldPairWhenTheNewOneIsBad(t *testing.T) {
	dir := t.TempDir()
	a, aSN := writePair(t, dir, "a", "a.example.com")
	b, _ := writePair(t, dir, "b", "b.example.com")
	reg := prometheus.NewRegistry()
	s, err := New([]Pair{a, b}, Options{Log: quiet(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload of unchanged files: %v", err)
	}

	// a gets a certificate whose key is not in a's key file; b a good new pair.
	newCert, _, _ := makePair(t, "a.example.com")
	os.WriteFile(a.CertFile, newCert, 0o600)
	_, bSN2 := writePair(t, dir, "b", "b.example.com")
	err = s.Reload()
	if !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("Reload: got %v, want ErrKeyMismatch", err)
	}
	if got := serialOf(t, s, "a.example.com"); got != aSN {
		t.Errorf("a: got certificate %d after a bad reload, want the old %d", got, aSN)
	}
	if got := serialOf(t, s, "b.example.com"); got != bSN2 {
		t.Errorf("b: got certificate %d, want the reloaded %d", got, bSN2)
	}

	// Truncated (a half-written file) is kept out the same way.
	os.WriteFile(a.CertFile, newCert[:len(newCert)/2], 0o600)
	if err := s.Reload(); err == nil {
		t.Error("Reload of a truncated certificate: got no error")
	}
	if got := serialOf(t, s, "a.example.com"); got != aSN {
		t.Errorf("a: got certificate %d after a truncated file, want the old %d", got, aSN)
	}

	_, aSN2 := writePair(t, dir, "a", "a.example.com")
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload of a fixed pair: %v", err)
	}
	if got := serialOf(t, s, "a.example.com"); got != aSN2 {
		t.Errorf("a: got certificate %d, want the fixed %d", got, aSN2)
	}
	fams, _ := reg.Gather()
	counts := map[string]float64{}
	for _, f := range fams {
		if f.GetName() == "veer_tls_certificate_reloads_total" {
			for _, m := range f.Metric {
				counts[m.Label[0].GetValue()] = m.Counter.GetValue()
			}
		}
	}
	if counts["success"] != 2 || counts["failure"] != 2 {
		t.Errorf("veer_tls_certificate_reloads_total: got %v, want success 2, failure 2", counts)
	}
}

// TestWatchPicksUpARenameSwap: a new pair moved into place (the way cert
// managers and Kubernetes write) is served shortly after.
func TestWatchPicksUpARenameSwap(t *testing.T) {
	dir := t.TempDir()
	a, aSN := writePair(t, dir, "a", "a.example.com")
	s, err := New([]Pair{a}, Options{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Watch(ctx, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	staging := t.TempDir()
	next, nextSN := writePair(t, staging, "a", "a.example.com")
	if err := os.Rename(next.KeyFile, a.KeyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next.CertFile, a.CertFile); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for serialOf(t, s, "a.example.com") != nextSN {
		if time.Now().After(deadline) {
			t.Fatalf("still serving %d 5s after the swap, want %d (was %d)", serialOf(t, s, "a.example.com"), nextSN, aSN)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint16
		ok   bool
	}{{"", tls.VersionTLS12, true}, {"1.2", tls.VersionTLS12, true}, {"1.3", tls.VersionTLS13, true}, {"1.1", 0, false}, {"1.20", 0, false}} {
		got, err := ParseVersion(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseVersion(%q): got %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
