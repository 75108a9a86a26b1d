package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veer-proxy/veer/config"
)

// writeCert writes a self-signed certificate for name and its key into
// dir as NAME.pem and NAME-key.pem.
func writeCert(t *testing.T, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

// parseIn writes src as dir/veer.yaml and parses it, so that relative
// paths resolve against dir.
func parseIn(t *testing.T, dir, src string) (*config.Config, error) {
	t.Helper()
	path := filepath.Join(dir, "veer.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(path)
}

func TestEdgeKeys(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "a.example.com")
	writeCert(t, dir, "b.example.com")
	os.MkdirAll(filepath.Join(dir, "logs"), 0o755)
	good := y(`
listen: 127.0.0.1:8443
tls:
  certificates:
    - {cert_file: a.example.com.pem, key_file: a.example.com-key.pem}
    - cert_file: b.example.com.pem
      key_file: b.example.com-key.pem
  redirect_http: 127.0.0.1:8080
access_log: {path: logs/access.log, format: combined}
`) + head + "    timeouts: {upgrade_idle: 10m}\n"
	c, err := parseIn(t, dir, good)
	if err != nil {
		t.Fatalf("good file: %v", err)
	}
	if got := c.TLS.MinVersion; got != "1.2" {
		t.Errorf("tls.min_version default: got %q, want 1.2", got)
	}
	pairs := c.Pairs()
	if len(pairs) != 2 || pairs[1].KeyFile != filepath.Join(dir, "b.example.com-key.pem") {
		t.Errorf("Pairs: got %+v, want two, resolved against %s", pairs, dir)
	}
	if got, want := c.AccessLogPath(), filepath.Join(dir, "logs", "access.log"); got != want {
		t.Errorf("AccessLogPath: got %q, want %q", got, want)
	}
	if got := c.Routes[0].Timeouts.UpgradeIdle.D(); got != 10*time.Minute {
		t.Errorf("timeouts.upgrade_idle: got %v, want 10m", got)
	}

	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"key of another certificate", y(`
tls:
  certificates:
    - {cert_file: a.example.com.pem, key_file: a.example.com-key.pem}
    - {cert_file: a.example.com.pem, key_file: b.example.com-key.pem}
`) + head, []want{{4, "b.example.com-key.pem is not the key of"}}},
		{"missing files", y(`
tls:
  certificates:
    - cert_file: nope.pem
      key_file: a.example.com-key.pem
    - {cert_file: a.example.com.pem}
    - {key_file: a.example.com.pem}
`) + head, []want{{3, "nope.pem: no such file"}, {5, "a certificate needs key_file"}, {6, "a certificate needs cert_file"}}},
		{"key given as the certificate", y(`
tls:
  certificates: [{cert_file: a.example.com-key.pem, key_file: a.example.com-key.pem}]
`) + head, []want{{2, "holds no PEM certificate"}}},
		{"no certificates", "tls: {min_version: \"1.3\"}\n" + head, []want{{1, "tls needs at least one certificate"}}},
		{"bad min_version and redirect", y(`
listen: 127.0.0.1:8443
tls:
  certificates: [{cert_file: a.example.com.pem, key_file: a.example.com-key.pem}]
  min_version: 1.1
  redirect_http: 127.0.0.1:8443
  redirect_port: 70000
`) + head, []want{{4, `tls.min_version "1.1" must be 1.2 or 1.3`}, {5, "tls.redirect_http 127.0.0.1:8443 is also listen"}, {6, "tls.redirect_port 70000 must be from 1 to 65535"}}},
		{"redirect_port without redirect_http", y(`
tls:
  certificates: [{cert_file: a.example.com.pem, key_file: a.example.com-key.pem}]
  redirect_port: 443
`) + head, []want{{3, "tls.redirect_port needs tls.redirect_http"}}},
		{"unknown key in tls", "tls: {certificate: x}\n" + head, []want{{1, `unknown key "certificate" in tls; expected one of: certificates, min_version, redirect_http, redirect_port`}}},
		{"access log in a missing directory", "access_log: {path: nowhere/access.log}\n" + head, []want{{1, "access_log.path nowhere/access.log: directory"}}},
		{"access log is a directory", "access_log: {path: logs}\n" + head, []want{{1, "access_log.path logs is a directory"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseIn(t, dir, tt.src)
			checkProblemsIn(t, err, filepath.Join(dir, "veer.yaml"), tt.want)
		})
	}
}

func TestUpstreamCAFileRelative(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "ca")
	src := y(`
routes:
  - name: shop
    versions:
      blue: {backends: ["127.0.0.1:9001"], tls: {enabled: true, ca_file: ca.pem, server_name: backend.test}}
`)
	if _, err := parseIn(t, dir, src); err != nil {
		t.Fatalf("ca_file relative to the config file: %v", err)
	}
	bad := strings.Replace(src, "ca.pem", "ca-key.pem", 1)
	_, err := parseIn(t, dir, bad)
	checkProblemsIn(t, err, filepath.Join(dir, "veer.yaml"), []want{{4, "holds no PEM certificate"}})
}

// checkProblemsIn is checkProblems for a file at path.
func checkProblemsIn(t *testing.T, err error, path string, ws []want) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %d problems", len(ws))
	}
	ps := config.Problems(err)
	var got strings.Builder
	for _, p := range ps {
		got.WriteString("\n\t" + p.Error())
	}
	if len(ps) != len(ws) {
		t.Fatalf("got %d problems:%s\nwant %d: %v", len(ps), got.String(), len(ws), ws)
	}
	for i, w := range ws {
		if ps[i].Line != w.line || !strings.Contains(ps[i].Msg, w.msg) || ps[i].File != path {
			t.Errorf("problem %d: got %s, want %s:%d containing %q; all:%s", i, ps[i].Error(), path, w.line, w.msg, got.String())
		}
	}
}
