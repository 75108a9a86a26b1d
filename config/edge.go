package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/veer-proxy/veer/tlsterm"
)

// This file validates the edge keys: tls on the listener, its redirect
// listener, access_log's path and the upstream CA files.

// Pairs returns the listener's certificate pairs with their paths resolved
// against the config file's directory (nil without tls).
func (c *Config) Pairs() []tlsterm.Pair {
	if c.TLS == nil {
		return nil
	}
	out := make([]tlsterm.Pair, len(c.TLS.Certificates))
	for i, p := range c.TLS.Certificates {
		out[i] = tlsterm.Pair{CertFile: c.ResolvePath(p.CertFile), KeyFile: c.ResolvePath(p.KeyFile)}
	}
	return out
}

// AccessLogPath is access_log.path resolved against the config file's
// directory ("stdout" and "stderr" as they are; "" when off).
func (c *Config) AccessLogPath() string {
	switch p := c.AccessLog.Path; p {
	case "", "stdout", "stderr":
		return p
	default:
		return c.ResolvePath(p)
	}
}

// listenerTLS checks the listener's tls: every pair loads and each key is
// its certificate's (what `veer validate` promises), the version, and the
// redirect listener.
func (k *checker) listenerTLS(t *ListenerTLS) {
	if len(t.Certificates) == 0 {
		k.add("tls needs at least one certificate: certificates: [{cert_file: ..., key_file: ...}]", "tls")
	}
	pairs := k.c.Pairs()
	for i, p := range t.Certificates {
		switch {
		case p.CertFile == "":
			k.add("a certificate needs cert_file: the PEM certificate (chain) file", "tls", "certificates", i)
		case p.KeyFile == "":
			k.add("a certificate needs key_file: the PEM private key file", "tls", "certificates", i)
		default:
			if _, err := tlsterm.LoadPair(pairs[i]); err != nil {
				k.add(fmt.Sprintf("tls.certificates[%d]: %v", i, err), "tls", "certificates", i)
			}
		}
	}
	if _, err := tlsterm.ParseVersion(t.MinVersion); err != nil {
		k.add(err.Error(), "tls", "min_version")
	}
	if t.RedirectHTTP != "" && k.addr(t.RedirectHTTP, "tls", "redirect_http") {
		for _, other := range []struct{ key, addr string }{{"listen", k.c.Listen}, {"admin.listen", k.c.Admin.Listen}} {
			if sameListener(t.RedirectHTTP, other.addr) {
				k.add(fmt.Sprintf("tls.redirect_http %s is also %s: the redirect listener needs its own address", t.RedirectHTTP, other.key), "tls", "redirect_http")
			}
		}
	}
	if t.RedirectPort < 0 || t.RedirectPort > 65535 {
		k.add(fmt.Sprintf("tls.redirect_port %d must be from 1 to 65535 (0 = the port of listen)", t.RedirectPort), "tls", "redirect_port")
	}
	if t.RedirectPort != 0 && t.RedirectHTTP == "" {
		k.add("tls.redirect_port needs tls.redirect_http", "tls", "redirect_port")
	}
}

// sameListener reports whether two listen addresses are one (port 0 is
// any free port, so never the same).
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa == "0" || pa != pb {
		return false
	}
	return ha == hb || ha == "" || hb == "" || ha == "0.0.0.0" || hb == "0.0.0.0" || ha == "::" || hb == "::"
}

// accessLogPath checks that an access log file can be created where it is
// said to be: its directory exists. (validate creates no file.)
func (k *checker) accessLogPath() {
	p := k.c.AccessLogPath()
	if p == "" || p == "stdout" || p == "stderr" {
		return
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		k.add(fmt.Sprintf("access_log.path %s is a directory: name a file", k.c.AccessLog.Path), "access_log", "path")
		return
	}
	if fi, err := os.Stat(filepath.Dir(p)); err != nil || !fi.IsDir() {
		k.add(fmt.Sprintf("access_log.path %s: directory %s does not exist", k.c.AccessLog.Path, filepath.Dir(p)), "access_log", "path")
	}
}

// checkCAFile checks that an upstream CA file holds PEM certificates.
func checkCAFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}
