package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
	pool *x509.CertPool
}

var certSerial atomic.Int64

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(certSerial.Add(1)),
		Subject:               pkix.Name{CommonName: "veer e2e test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	return ca
}

// leaf issues a server certificate for names (DNS names or IP addresses)
// and returns it and its key as PEM, and its serial number.
func (ca *testCA) leaf(t *testing.T, names ...string) (certPEM, keyPEM []byte, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial = certSerial.Add(1)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
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

// writePair writes a leaf for names as dir/file.pem and dir/file-key.pem.
func (ca *testCA) writePair(t *testing.T, dir, file string, names ...string) int64 {
	t.Helper()
	c, k, serial := ca.leaf(t, names...)
	writeFile(t, filepath.Join(dir, file+".pem"), string(c))
	writeFile(t, filepath.Join(dir, file+"-key.pem"), string(k))
	return serial
}

// tlsClient is an HTTPS client that trusts ca and sends serverName as SNI,
// on a new connection per request when fresh is set (so that every
// request sees the certificate served at that moment).
func tlsClient(ca *testCA, serverName string, fresh bool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ca.pool, ServerName: serverName},
			DisableKeepAlives: fresh,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// httpsGet sends GET to veer over TLS with Host host; it returns the status
// and the serial of the certificate veer presented.
func httpsGet(c *http.Client, addr, host, path string) (int, int64, error) {
	req, _ := http.NewRequest("GET", "https://"+addr+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

func mustHTTPS(t *testing.T, c *http.Client, addr, host, path string) (int, int64) {
	t.Helper()
	code, serial, err := httpsGet(c, addr, host, path)
	if err != nil {
		t.Fatalf("GET https://%s%s (Host %s): %v", addr, path, host, err)
	}
	return code, serial
}

func startVeerWith(t *testing.T, dir, config string, flags ...string) *Veer {
	t.Helper()
	path := filepath.Join(dir, "veer.yaml")
	writeFile(t, path, config)
	return startVeerArgs(t, dir, path, flags...)
}

var redirectRE = regexp.MustCompile(`redirect_http=(\S+)`)

// TestTLSTermination: two names served by SNI with their own
// certificates, the first as the default for clients without SNI, TLS 1.2
// at least with AEAD suites only, X-Forwarded-Proto: https at the backend,
// and the redirect listener's 308s.
func TestTLSTermination(t *testing.T) {
	ca := newCA(t)
	blue := NewBackend(t, "blue")
	dir := t.TempDir()
	shopSN := ca.writePair(t, dir, "shop", "shop.example.com")
	apiSN := ca.writePair(t, dir, "api", "api.example.com", "*.api.example.com")
	v := startVeerWith(t, dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
tls:
  certificates:
    - {cert_file: shop.pem, key_file: shop-key.pem}
    - {cert_file: api.pem, key_file: api-key.pem}
  redirect_http: 127.0.0.1:0
routes:
  - name: web
    versions:
      blue: {backends: [%q]}
`, blue.Addr))

	for _, tt := range []struct {
		sni  string
		want int64
	}{{"shop.example.com", shopSN}, {"api.example.com", apiSN}, {"v2.api.example.com", apiSN}} {
		t.Run("SNI "+tt.sni, func(t *testing.T) {
			code, serial := mustHTTPS(t, tlsClient(ca, tt.sni, true), v.ProxyAddr, tt.sni, "/x")
			if code != 200 || serial != tt.want {
				t.Errorf("got %d with certificate %d, want 200 with %d", code, serial, tt.want)
			}
			h, host, _ := blue.Last()
			if h.Get("X-Forwarded-Proto") != "https" || host != tt.sni {
				t.Errorf("backend saw X-Forwarded-Proto %q, Host %q; want https, %s", h.Get("X-Forwarded-Proto"), host, tt.sni)
			}
		})
	}

	t.Run("no SNI gets the first certificate", func(t *testing.T) {
		// Go sends no SNI to an IP address.
		c, err := tls.Dial("tcp", v.ProxyAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != shopSN {
			t.Errorf("certificate %d, want the default %d", got, shopSN)
		}
		if got := c.ConnectionState().NegotiatedProtocol; got != "" && got != "http/1.1" {
			t.Errorf("ALPN: got %q, want http/1.1 or none", got)
		}
	})

	t.Run("old versions and weak suites refused", func(t *testing.T) {
		for name, cfg := range map[string]*tls.Config{
			"TLS 1.1": {MaxVersion: tls.VersionTLS11},
			"CBC":     {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}},
		} {
			cfg.RootCAs, cfg.ServerName = ca.pool, "shop.example.com"
			if c, err := tls.Dial("tcp", v.ProxyAddr, cfg); err == nil {
				c.Close()
				t.Errorf("%s: handshake succeeded, want it refused", name)
			}
		}
		c, err := tls.Dial("tcp", v.ProxyAddr, &tls.Config{RootCAs: ca.pool, ServerName: "shop.example.com", MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("TLS 1.2 with default suites: %v", err)
		}
		c.Close()
	})

	t.Run("plain HTTP on the TLS listener fails", func(t *testing.T) {
		if resp, err := client.Get("http://" + v.ProxyAddr + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Error("plain HTTP on the TLS listener was served")
			}
		}
	})

	t.Run("redirect listener", func(t *testing.T) {
		m := redirectRE.FindStringSubmatch(v.Log())
		if m == nil {
			t.Fatalf("no redirect_http address in the log:\n%s", v.Log())
		}
		_, port, _ := net.SplitHostPort(v.ProxyAddr)
		req, _ := http.NewRequest("POST", "http://"+m[1]+"/cart/add?id=7", strings.NewReader("x"))
		req.Host = "shop.example.com:80"
		resp, err := tlsClient(ca, "", false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := "https://shop.example.com:" + port + "/cart/add?id=7"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
			t.Errorf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
		// Following it lands on veer over TLS.
		loc := strings.Replace(resp.Header.Get("Location"), "shop.example.com", "127.0.0.1", 1)
		req, _ = http.NewRequest("GET", loc, nil)
		req.Host = "shop.example.com"
		resp, err = tlsClient(ca, "shop.example.com", true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("following the redirect: %d", resp.StatusCode)
		}
	})
}

// TestTLSValidate: `veer validate` loads the pairs and checks each key is
// its certificate's, reporting FILE:LINE.
func TestTLSValidate(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	ca.writePair(t, dir, "a", "a.example.com")
	ca.writePair(t, dir, "b", "b.example.com")
	path := filepath.Join(dir, "veer.yaml")
	cfg := `listen: 127.0.0.1:8443
tls:
  certificates:
    - {cert_file: a.pem, key_file: a-key.pem}
    - {cert_file: b.pem, key_file: a-key.pem}
    - {cert_file: missing.pem, key_file: b-key.pem}
routes:
  - name: web
    versions: {blue: {backends: ["127.0.0.1:9001"]}}
`
	writeFile(t, path, cfg)
	out, err := exec.Command(veerBin, "validate", "-config", path).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("validate: exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{path + ":5: tls.certificates[1]: " + filepath.Join(dir, "a-key.pem") + " is not the key of " + filepath.Join(dir, "b.pem") + "\n",
		path + ":6: tls.certificates[2]: certificate: open " + filepath.Join(dir, "missing.pem") + ": no such file"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	writeFile(t, path, strings.Replace(strings.Replace(cfg, "b.pem, key_file: a-key.pem", "b.pem, key_file: b-key.pem", 1), "missing.pem", "b.pem", 1))
	if out, err := exec.Command(veerBin, "validate", "-config", path).CombinedOutput(); err != nil {
		t.Fatalf("validate of good pairs: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// TestTLSCertificateSwap: clients keep requesting (a new connection each
// time, and a keep-alive one) while the certificate is replaced on disk:
// no request fails and the new certificate is served after the swap. Then
// an invalid pair is written: it is kept out, the last good certificate
// keeps serving, and the reason is logged.
func TestTLSCertificateSwap(t *testing.T) {
	ca := newCA(t)
	blue := NewBackend(t, "blue")
	dir := t.TempDir()
	first := ca.writePair(t, dir, "shop", "shop.example.com")
	v := startVeerWith(t, dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
tls:
  certificates: [{cert_file: shop.pem, key_file: shop-key.pem}]
routes:
  - name: web
    versions:
      blue: {backends: [%q]}
`, blue.Addr))

	var (
		mu       sync.Mutex
		failures []string
		lastSeen atomic.Int64 // by the clients that connect anew each time
		kept     atomic.Int64 // by the keep-alive client
		requests atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	lastSeen.Store(first)
	loop := func(c *http.Client, seen *atomic.Int64) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			code, serial, err := httpsGet(c, v.ProxyAddr, "shop.example.com", "/")
			requests.Add(1)
			if err != nil || code != 200 {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%d %v", code, err))
				mu.Unlock()
				continue
			}
			seen.Store(serial)
		}
	}
	wg.Add(3)
	go loop(tlsClient(ca, "shop.example.com", true), &lastSeen)
	go loop(tlsClient(ca, "shop.example.com", true), &lastSeen)
	go loop(tlsClient(ca, "shop.example.com", false), &kept)
	stopLoops := func() {
		close(stop)
		wg.Wait()
	}
	defer func() {
		select {
		case <-stop:
		default:
			stopLoops()
		}
	}()
	Eventually(t, 5*time.Second, "requests to flow", func() bool { return requests.Load() > 20 })

	// The swap, the way cert-manager and editors write: new files beside,
	// renamed over the old ones.
	staging := t.TempDir()
	second := ca.writePair(t, staging, "shop", "shop.example.com")
	for _, f := range []string{"shop-key.pem", "shop.pem"} {
		if err := os.Rename(filepath.Join(staging, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	fresh := tlsClient(ca, "shop.example.com", true)
	Eventually(t, 10*time.Second, "the new certificate to be served", func() bool {
		_, serial, err := httpsGet(fresh, v.ProxyAddr, "shop.example.com", "/")
		return err == nil && serial == second
	})
	before := requests.Load()
	Eventually(t, 5*time.Second, "more requests after the swap", func() bool { return requests.Load() > before+20 })
	if got := lastSeen.Load(); got != second {
		t.Errorf("clients still see certificate %d after the swap, want %d", got, second)
	}
	// A connection open across the swap keeps the certificate it began with.
	if got := kept.Load(); got != first {
		t.Errorf("the keep-alive connection sees certificate %d, want %d, the one it was opened with", got, first)
	}

	// An invalid pair: a new certificate whose key is not in the key file
	// (written in place, as `cp` does).
	third, _, _ := ca.leaf(t, "shop.example.com")
	writeFile(t, filepath.Join(dir, "shop.pem"), string(third))
	Eventually(t, 10*time.Second, "the bad pair to be reported", func() bool {
		return strings.Contains(v.Log(), "TLS certificate not reloaded")
	})
	before = requests.Load()
	Eventually(t, 5*time.Second, "requests after the bad pair", func() bool { return requests.Load() > before+20 })
	stopLoops()
	if got := lastSeen.Load(); got != second {
		t.Errorf("after the bad pair clients see certificate %d, want the last good %d", got, second)
	}
	if _, serial := mustHTTPS(t, fresh, v.ProxyAddr, "shop.example.com", "/"); serial != second {
		t.Errorf("a new connection gets certificate %d, want %d", serial, second)
	}
	if !strings.Contains(v.Log(), "is not the key of") {
		t.Errorf("the log does not say why the pair was kept out:\n%s", v.Log())
	}
	if got := metricValue(t, v.AdminURL(), "veer_tls_certificate_reloads_total", "result=failure"); got < 1 {
		t.Errorf("veer_tls_certificate_reloads_total{result=failure}: got %v, want at least 1", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during the swaps, want none; first: %s", len(failures), requests.Load(), failures[0])
	}
	t.Logf("%d requests across the swaps", requests.Load())
}

// TestTLSUpstream: a version whose backends are HTTPS, verified against a
// test CA named by a path relative to the config file; one that skips
// verification (allowed because explicit, and logged loudly); and one
// whose backend is not trusted (502).
func TestTLSUpstream(t *testing.T) {
	ca := newCA(t)
	certPEM, keyPEM, _ := ca.leaf(t, "backend.test")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	var lastProto atomic.Value
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		lastProto.Store(fmt.Sprintf("%s tls=%v sni=%s", r.Proto, r.TLS != nil, r.TLS.ServerName))
		io.WriteString(w, "secure backend\n")
	}))
	be.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	be.StartTLS()
	t.Cleanup(be.Close)
	addr := be.Listener.Addr().String()

	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pki"), 0o755)
	writeFile(t, filepath.Join(dir, "pki", "ca.pem"), string(ca.PEM))
	v := startVeerWith(t, dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: web
    stable: secure
    versions:
      secure:    {backends: [%[1]q], tls: {enabled: true, ca_file: pki/ca.pem, server_name: backend.test}}
      insecure:  {backends: [%[1]q], tls: {enabled: true, insecure_skip_verify: true}}
      untrusted: {backends: [%[1]q], tls: {enabled: true, server_name: backend.test}}
    weights: {secure: 100}
    retries: {attempts: 0}
`, addr))

	code, ver, body := Get(t, v.ProxyURL()+"/")
	if code != 200 || ver != "secure" || body != "secure backend\n" {
		t.Errorf("secure: got %d %q %q, want 200 from secure", code, ver, body)
	}
	if got, _ := lastProto.Load().(string); got != "HTTP/1.1 tls=true sni=backend.test" {
		t.Errorf("the backend saw %q, want HTTP/1.1 over TLS with SNI backend.test", got)
	}
	if code, ver, _ := Get(t, v.ProxyURL()+"/", "X-Veer-Version", "insecure"); code != 200 || ver != "insecure" {
		t.Errorf("insecure_skip_verify: got %d from %q, want 200 from insecure", code, ver)
	}
	n := hits.Load()
	if code, ver, _ := Get(t, v.ProxyURL()+"/", "X-Veer-Version", "untrusted"); code != 502 || ver != "untrusted" {
		t.Errorf("backend certificate from an unknown CA: got %d from %q, want 502 from untrusted", code, ver)
	}
	if hits.Load() != n {
		t.Error("the untrusted backend got the request: its certificate was not verified")
	}
	if !regexp.MustCompile(`level=WARN msg="INSECURE: tls.insecure_skip_verify is on[^\n]*route=web version=insecure`).MatchString(v.Log()) {
		t.Errorf("no loud warning about insecure_skip_verify in the log:\n%s", v.Log())
	}
}
