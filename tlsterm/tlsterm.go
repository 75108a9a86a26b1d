// Package tlsterm terminates TLS on veer's proxy listener: it loads
// certificate/key pairs, chooses one per connection by SNI, and re-reads the
// files when they change without dropping a connection.
//
// The certificates being served are an immutable set behind an
// atomic.Pointer, which tls.Config.GetCertificate reads at every handshake;
// a reload builds a new set and swaps it in, so handshakes already under way
// finish with the set they started with and none waits on a lock. Reloads
// follow the rules of config reloads: a pair that does not load (a missing
// file, bad PEM, a key that does not match its certificate, a half-written
// file) keeps the pair that was serving, and the reason is logged.
package tlsterm

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Pair names a certificate file (PEM, the leaf first, then any
// intermediates) and the file of its private key.
type Pair struct {
	CertFile string
	KeyFile  string
}

func (p Pair) String() string { return p.CertFile + " + " + p.KeyFile }

// Sentinel errors of LoadPair, checked with errors.Is.
var (
	ErrNoCertificate = errors.New("tlsterm: no certificate")
	ErrKeyMismatch   = errors.New("tlsterm: the private key does not match the certificate")
)

// LoadPair reads and checks one pair: both files are PEM, the key is the
// certificate's (crypto/tls checks the public keys are equal), and the leaf
// parses, so that its names are known.
func LoadPair(p Pair) (*tls.Certificate, error) {
	certPEM, keyPEM, err := readPair(p)
	if err != nil {
		return nil, err
	}
	return parsePair(p, certPEM, keyPEM)
}

// pairError is a problem of a pair, in the operator's terms, that is (for
// errors.Is) one of the sentinels.
type pairError struct {
	msg  string
	kind error
}

func (e *pairError) Error() string { return e.msg }
func (e *pairError) Unwrap() error { return e.kind }

func parsePair(p Pair, certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if !bytes.Contains(certPEM, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, &pairError{p.CertFile + " holds no PEM certificate", ErrNoCertificate}
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return nil, &pairError{p.KeyFile + " is not the key of " + p.CertFile, ErrKeyMismatch}
		}
		return nil, fmt.Errorf("%s: %v", p, err)
	}
	if c.Leaf == nil { // Go 1.23 on fills Leaf; older x509keypairleaf=0 does not
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %v", p.CertFile, err)
		}
	}
	return &c, nil
}

// Names returns the host names c is chosen for: its DNS subject
// alternative names, lower-cased (wildcards such as *.example.com
// included). A certificate without any is served only as the default.
func Names(c *tls.Certificate) []string {
	var out []string
	for _, n := range c.Leaf.DNSNames {
		out = append(out, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	return out
}

// set is an immutable choice of certificates by name. Read-only once built.
type set struct {
	def    *tls.Certificate
	byName map[string][]*tls.Certificate // exact names and "*.suffix" wildcards
}

func newSet(certs []*tls.Certificate) *set {
	s := &set{byName: map[string][]*tls.Certificate{}}
	for _, c := range certs {
		if c == nil {
			continue
		}
		if s.def == nil {
			s.def = c
		}
		for _, n := range Names(c) {
			s.byName[n] = append(s.byName[n], c)
		}
	}
	return s
}

// pick chooses the certificate for a ClientHello: an exact name, then a
// wildcard for the name's parent, then the default (the first pair). Among
// several certificates for one name (an RSA and an ECDSA one), the first
// the client supports wins.
func (s *set) pick(hello *tls.ClientHelloInfo) *tls.Certificate {
	name := hello.ServerName
	if name == "" {
		return s.def
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if c := s.choose(hello, s.byName[name]); c != nil {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c := s.choose(hello, s.byName["*"+name[i:]]); c != nil {
			return c
		}
	}
	return s.def
}

func (s *set) choose(hello *tls.ClientHelloInfo, certs []*tls.Certificate) *tls.Certificate {
	switch len(certs) {
	case 0:
		return nil
	case 1:
		return certs[0]
	}
	for _, c := range certs {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	return certs[0]
}

// Options configure a Store.
type Options struct {
	Log *slog.Logger
	// Registerer, when set, gets veer_tls_certificate_reloads_total and
	// veer_tls_certificate_not_after_seconds.
	Registerer prometheus.Registerer
}

// loaded is the pair that serves for one entry of the list, and the bytes
// it was loaded from (a reload that finds the same bytes does nothing).
type loaded struct {
	pair            Pair
	cert            *tls.Certificate
	certPEM, keyPEM []byte
}

// Store serves the certificates of a list of pairs, the first being the
// default for clients that send no SNI or a name no certificate covers.
// Safe for concurrent use; GetCertificate takes no lock.
type Store struct {
	log     *slog.Logger
	cur     atomic.Pointer[set]
	mu      sync.Mutex // serializes Reload and SetPairs
	entries []loaded
	reloads *prometheus.CounterVec
	expiry  *prometheus.GaugeVec
	watch   *watcher // nil until Watch
}

// New loads every pair; any that does not load is an error (at start there
// is nothing older to keep).
func New(pairs []Pair, o Options) (*Store, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Store{log: o.Log}
	if o.Registerer != nil {
		s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veer_tls_certificate_reloads_total",
			Help: "Reloads of the listener's certificate files by result (success, failure: the previous pair kept serving)."},
			[]string{"result"})
		s.expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "veer_tls_certificate_not_after_seconds",
			Help: "Expiry (NotAfter, Unix seconds) of each certificate the listener serves."}, []string{"cert_file"})
		if err := o.Registerer.Register(s.reloads); err != nil {
			return nil, err
		}
		if err := o.Registerer.Register(s.expiry); err != nil {
			return nil, err
		}
		s.reloads.WithLabelValues("success")
		s.reloads.WithLabelValues("failure")
	}
	if err := s.SetPairs(pairs); err != nil {
		return nil, err
	}
	return s, nil
}

// SetPairs serves a new list of pairs (a config reload that changed
// tls.certificates). Every pair must load, or nothing changes.
func (s *Store) SetPairs(pairs []Pair) error {
	if len(pairs) == 0 {
		return fmt.Errorf("tlsterm: %w: the list of certificates is empty", ErrNoCertificate)
	}
	var entries []loaded
	var errs []error
	for _, p := range pairs {
		certPEM, keyPEM, err := readPair(p)
		var c *tls.Certificate
		if err == nil {
			c, err = parsePair(p, certPEM, keyPEM)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries = append(entries, loaded{pair: p, cert: c, certPEM: certPEM, keyPEM: keyPEM})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = entries
	s.publish()
	if s.watch != nil {
		s.watch.set(pairs)
	}
	return nil
}

func readPair(p Pair) ([]byte, []byte, error) {
	certPEM, err := os.ReadFile(p.CertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	return certPEM, keyPEM, nil
}

// publish builds the set from s.entries and swaps it in. s.mu is held.
func (s *Store) publish() {
	certs := make([]*tls.Certificate, len(s.entries))
	for i, e := range s.entries {
		certs[i] = e.cert
		if s.expiry != nil {
			s.expiry.WithLabelValues(e.pair.CertFile).Set(float64(e.cert.Leaf.NotAfter.Unix()))
		}
	}
	s.cur.Store(newSet(certs))
}

// Reload re-reads every pair. A pair whose files are unchanged is left as
// it is; a changed pair that loads replaces the old one; one that does not
// load leaves the old one serving, and the reason is logged and returned.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	var errs []error
	for i := range s.entries {
		e := &s.entries[i]
		certPEM, keyPEM, err := readPair(e.pair)
		if err == nil && bytes.Equal(certPEM, e.certPEM) && bytes.Equal(keyPEM, e.keyPEM) {
			continue
		}
		var c *tls.Certificate
		if err == nil {
			c, err = parsePair(e.pair, certPEM, keyPEM)
		}
		if err != nil {
			s.count("failure")
			s.log.Error("TLS certificate not reloaded: the previous certificate keeps serving until the files hold a valid pair",
				"cert_file", e.pair.CertFile, "key_file", e.pair.KeyFile, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", e.pair, err))
			continue
		}
		e.cert, e.certPEM, e.keyPEM = c, certPEM, keyPEM
		changed = true
		s.count("success")
		s.log.Info("TLS certificate reloaded: new handshakes get it, open connections keep theirs",
			"cert_file", e.pair.CertFile, "names", strings.Join(Names(c), ","),
			"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if changed {
		s.publish()
	}
	return errors.Join(errs...)
}

func (s *Store) count(result string) {
	if s.reloads != nil {
		s.reloads.WithLabelValues(result).Inc()
	}
}

// GetCertificate is tls.Config.GetCertificate: the certificate for the
// client's SNI name, or the default. It takes no lock and allocates nothing.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cur.Load().pick(hello); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// Certificates returns the certificates served, the default first.
func (s *Store) Certificates() []*tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*tls.Certificate, len(s.entries))
	for i, e := range s.entries {
		out[i] = e.cert
	}
	return out
}

// CipherSuites are the TLS 1.2 suites offered: ECDHE key exchange with
// AEAD ciphers only, Mozilla's "intermediate" list
// (https://wiki.mozilla.org/Security/Server_Side_TLS). TLS 1.3 suites are
// not configurable in Go and are all modern.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ParseVersion reads a min_version setting: "1.2" (also the default, "")
// or "1.3".
func ParseVersion(v string) (uint16, error) {
	switch v {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tls.min_version %q must be 1.2 or 1.3", v)
}

// Config returns the server tls.Config: the store's certificates by SNI,
// at least minVersion, the suites of CipherSuites, HTTP/1.1 by ALPN (veer
// speaks HTTP/1.1 to clients).
func (s *Store) Config(minVersion uint16) *tls.Config {
	return &tls.Config{
		MinVersion:     minVersion,
		CipherSuites:   CipherSuites,
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"http/1.1"},
	}
}
