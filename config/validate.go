package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults used when a key is absent. docs/config.md lists them.
const (
	DefaultListen         = "127.0.0.1:8080"
	DefaultAdminListen    = "127.0.0.1:9901"
	DefaultStateFile      = "veer-state.json"
	DefaultOverrideHeader = "X-Veer-Version"
	DefaultAdminRateLimit = 20 // admin API requests per second per client
)

// EventTypes are the event types of SPEC's EVENT, which webhooks may filter on.
var EventTypes = []string{"rollback", "promote", "switch", "weights", "undo", "step",
	"reload", "reload-failed", "backend-down", "backend-up", "freeze", "pause", "resume"}

// applyDefaults fills in what the file leaves out; docs/config.md lists
// every default.
func (c *Config) applyDefaults() {
	setStr(&c.Listen, DefaultListen)
	setStr(&c.Admin.Listen, DefaultAdminListen)
	setStr(&c.StateFile, DefaultStateFile)
	if c.Admin.RateLimit == 0 {
		c.Admin.RateLimit = DefaultAdminRateLimit
	}
	setDur(&c.DrainTimeout, 15*time.Second)
	setInt(&c.Limits.MaxHeaderBytes, 16<<10)
	setInt(&c.Limits.MaxURIBytes, 8<<10)
	setDur(&c.Limits.HeaderReadTimeout, 10*time.Second)
	setDur(&c.Limits.ClientIdleTimeout, 60*time.Second)
	if rps := c.RateLimit.RequestsPerSecond; rps > 0 && rps <= maxRate && c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = int(rps) + 1
	}
	setStr(&c.AccessLog.Format, "json")
	if c.TLS != nil {
		setStr(&c.TLS.MinVersion, "1.2")
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		setStr(&r.Match.PathPrefix, "/")
		if r.Stable == "" && len(r.Versions) == 1 {
			r.Stable = r.VersionOrder[0]
		}
		if _, ok := r.Versions[r.Stable]; ok && len(r.Weights) == 0 {
			r.Weights = map[string]Percent{r.Stable: PercentScale}
		}
		for _, v := range r.VersionOrder { // versions left out of weights get 0
			if _, ok := r.Weights[v]; !ok && r.Weights != nil {
				r.Weights[v] = 0
			}
		}
		if r.Candidate == "" && len(r.Versions) == 2 && r.Stable != "" {
			for _, v := range r.VersionOrder {
				if v != r.Stable {
					r.Candidate = v
				}
			}
		}
		if r.OverrideHeader == nil {
			h := DefaultOverrideHeader
			r.OverrideHeader = &h
		}
		rb := &r.Rollback
		if rb.MaxErrorRate == nil {
			p := Percent(500)
			rb.MaxErrorRate = &p
		}
		setDur(&rb.Window, 30*time.Second)
		setInt(&rb.MinRequests, 20)
		setStr(&rb.Action, "rollback")
		for j := range r.Steps {
			if a := r.Steps[j].Analysis; a != nil {
				setDur(&a.Window, rb.Window.D())
				setInt(&a.MinRequests, rb.MinRequests)
				if a.MaxErrorRate == nil {
					p := *rb.MaxErrorRate
					a.MaxErrorRate = &p
				}
			}
		}
		if hc := &r.HealthCheck; hc.Path != "" {
			setDur(&hc.Interval, 5*time.Second)
			setDur(&hc.Timeout, time.Second)
			setInt(&hc.Healthy, 2)
			setInt(&hc.Unhealthy, 3)
		}
		if r.Outlier.Consecutive5xx == nil {
			n := 5
			r.Outlier.Consecutive5xx = &n
		}
		setDur(&r.Outlier.EjectionTime, 30*time.Second)
		if r.Outlier.MaxEjectionPercent == nil {
			p := Percent(5000)
			r.Outlier.MaxEjectionPercent = &p
		}
		setDur(&r.Timeouts.Connect, time.Second)
		setDur(&r.Timeouts.ResponseHeader, 30*time.Second)
		setDur(&r.Timeouts.Idle, 90*time.Second)
		setDur(&r.Timeouts.UpgradeIdle, time.Hour)
		if r.Retries.Attempts == nil {
			n := 1
			r.Retries.Attempts = &n
		}
		if r.Mirror.MaxBodyBytes == 0 {
			r.Mirror.MaxBodyBytes = 64 << 10
		}
	}
}

func setStr(s *string, d string) {
	if *s == "" {
		*s = d
	}
}

func setInt(i *int, d int) {
	if *i == 0 {
		*i = d
	}
}

func setDur(x *Duration, d time.Duration) {
	if *x == 0 {
		*x = Duration(d)
	}
}

// maxRate bounds the rates of rate_limit and admin.rate_limit (requests per
// second), so that the derived burst fits an int.
const maxRate = 1_000_000

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	tokenRE   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	hostRE    = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
)

// hostnameRE is a host name as resolvers take it: labels of letters, digits,
// - and _ (Docker Compose service names have underscores), an optional
// final dot.
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$`)

// validHost reports whether h is an IP address or a host name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return len(h) <= 253 && hostnameRE.MatchString(h)
}

// checker collects problems with their lines.
type checker struct {
	c     *Config
	probs []error
}

func (k *checker) add(msg string, path ...any) {
	k.probs = append(k.probs, &Problem{File: k.c.File, Line: k.c.line(path...), Msg: msg})
}

// Validate checks c and returns every problem joined (errors.Join), each a
// *Problem with its line; nil when c is valid.
func (c *Config) Validate() error {
	k := &checker{c: c}
	k.addr(c.Listen, "listen")
	if k.addr(c.Admin.Listen, "admin", "listen") && !IsLoopback(c.Admin.Listen) && c.Admin.TokenFile == "" {
		k.add(fmt.Sprintf("admin.listen %s is not a loopback address: set admin.token_file so that the admin API needs a token", c.Admin.Listen), "admin", "listen")
	}
	if c.Admin.TokenFile != "" {
		if _, err := ReadToken(c.ResolvePath(c.Admin.TokenFile)); err != nil {
			k.add(err.Error(), "admin", "token_file")
		}
	}
	if r := c.Admin.RateLimit; !(r >= 0 && r <= maxRate) {
		k.add(fmt.Sprintf("admin.rate_limit %v must be from 0 (the default, %d) to %d requests per second", r, DefaultAdminRateLimit, maxRate), "admin", "rate_limit")
	}
	if c.DrainTimeout < 0 {
		k.add("drain_timeout must not be negative", "drain_timeout")
	}
	for i, p := range c.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			k.add(err.Error(), "trusted_proxies", i)
		}
	}
	k.limits()
	if f := c.AccessLog.Format; f != "" && f != "json" && f != "combined" {
		k.add(fmt.Sprintf("access_log.format %q must be json or combined", f), "access_log", "format")
	}
	k.accessLogPath()
	if c.TLS != nil {
		k.listenerTLS(c.TLS)
	}
	if r := c.RateLimit.RequestsPerSecond; !(r >= 0 && r <= maxRate) {
		k.add(fmt.Sprintf("rate_limit.requests_per_second %v must be from 0 (off) to %d", r, maxRate), "rate_limit", "requests_per_second")
	}
	if c.RateLimit.Burst < 0 {
		k.add("rate_limit.burst must not be negative (0 = requests_per_second + 1)", "rate_limit", "burst")
	}
	if len(c.Routes) == 0 {
		k.add("no routes: add at least one under `routes:`", "routes")
	}
	names := map[string]int{}
	matches := map[string]string{}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Name == "" {
			k.add("route has no name: add name: with 1-63 characters of [a-z0-9-]", "routes", i)
		} else if !nameRE.MatchString(r.Name) {
			k.add(fmt.Sprintf("route name %q must be 1-63 characters of [a-z0-9-], not starting or ending with -", r.Name), "routes", i, "name")
		} else if j, dup := names[r.Name]; dup {
			k.add(fmt.Sprintf("route name %q is already used by route %d (line %d): route names must be unique", r.Name, j+1, c.line("routes", j, "name")), "routes", i, "name")
		} else {
			names[r.Name] = i
		}
		key := strings.ToLower(r.Match.Host) + " " + r.Match.PathPrefix
		if other, dup := matches[key]; dup {
			k.add(fmt.Sprintf("route %q matches the same host and path_prefix as route %q: one of them would never be used", r.Name, other), "routes", i, "match")
		} else {
			matches[key] = r.Name
		}
		k.route(i, r)
	}
	for i, w := range c.Notify.Webhooks {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			k.add(fmt.Sprintf("webhook url %q must be an absolute http:// or https:// URL", w.URL), "notify", "webhooks", i, "url")
		}
		for j, e := range w.Events {
			if !contains(EventTypes, e) {
				k.add(fmt.Sprintf("unknown event %q (one of %s)", e, strings.Join(EventTypes, ", ")), "notify", "webhooks", i, "events", j)
			}
		}
	}
	sort.SliceStable(k.probs, func(i, j int) bool { return k.probs[i].(*Problem).Line < k.probs[j].(*Problem).Line })
	return errors.Join(k.probs...)
}

func (k *checker) limits() {
	l := k.c.Limits
	if l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20 {
		k.add("limits.max_header_bytes must be from 1024 to 1048576", "limits", "max_header_bytes")
	}
	if l.MaxURIBytes < 64 || l.MaxURIBytes > l.MaxHeaderBytes {
		k.add("limits.max_uri_bytes must be from 64 to limits.max_header_bytes", "limits", "max_uri_bytes")
	}
	if l.MaxBodyBytes < 0 {
		k.add("limits.max_body_bytes must not be negative (0 = unlimited)", "limits", "max_body_bytes")
	}
	if l.MaxConnections < 0 {
		k.add("limits.max_connections must not be negative (0 = unlimited)", "limits", "max_connections")
	}
}

// addr checks a listen address and reports whether it is good.
func (k *checker) addr(a string, path ...any) bool {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		k.add(fmt.Sprintf("%q is not a listen address: use host:port, such as 127.0.0.1:8080 or :8080", a), path...)
		return false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		k.add(fmt.Sprintf("%q: the port must be a number from 0 to 65535", a), path...)
		return false
	}
	if host != "" && !validHost(host) {
		k.add(fmt.Sprintf("%q: the host must be an IP address or a host name", a), path...)
		return false
	}
	return true
}

func (k *checker) route(i int, r *Route) {
	at := func(p ...any) []any { return append([]any{"routes", i}, p...) }
	m := r.Match
	if m.Host != "" && !hostRE.MatchString(m.Host) {
		k.add(fmt.Sprintf("match.host %q must be a host name or *.suffix", m.Host), at("match", "host")...)
	}
	if !strings.HasPrefix(m.PathPrefix, "/") {
		k.add(fmt.Sprintf("match.path_prefix %q must start with /", m.PathPrefix), at("match", "path_prefix")...)
	}
	if len(r.Versions) == 0 {
		k.add("route has no versions: add versions: with at least one version and its backends", at("versions")...)
	}
	if len(r.Versions) > 64 {
		k.add("a route may have at most 64 versions", at("versions")...)
	}
	for _, name := range versionOrder(r.Versions, r.VersionOrder) {
		v := r.Versions[name]
		if !versionRE.MatchString(name) {
			k.add(fmt.Sprintf("version name %q must be 1-63 characters of [A-Za-z0-9._-]", name), at("versions", name)...)
		}
		if len(v.Backends) == 0 {
			k.add(fmt.Sprintf("version %q has no backends: list at least one host:port", name), at("versions", name)...)
		}
		seen := map[string]bool{}
		for j, b := range v.Backends {
			if err := checkBackend(b); err != nil {
				k.add(fmt.Sprintf("version %q: %v", name, err), at("versions", name, "backends", j)...)
			} else if seen[b] {
				k.add(fmt.Sprintf("version %q lists backend %s twice", name, b), at("versions", name, "backends", j)...)
			}
			seen[b] = true
		}
		if t := v.TLS; !t.Enabled && (t.CAFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
			k.add(fmt.Sprintf("version %q: tls settings without tls.enabled: true; add it to use HTTPS to these backends", name), at("versions", name, "tls")...)
		}
		if t := v.TLS; t.InsecureSkipVerify && t.CAFile != "" {
			k.add(fmt.Sprintf("version %q: tls.ca_file is unused with tls.insecure_skip_verify: true; drop one of them", name), at("versions", name, "tls", "insecure_skip_verify")...)
		}
		if v.TLS.CAFile != "" {
			if err := checkCAFile(k.c.ResolvePath(v.TLS.CAFile)); err != nil {
				k.add(fmt.Sprintf("version %q: tls.ca_file: %v", name, err), at("versions", name, "tls", "ca_file")...)
			}
		}
	}
	has := func(v string) bool { _, ok := r.Versions[v]; return ok }
	if r.Stable == "" {
		if len(r.Versions) > 1 {
			k.add("stable is required when a route has more than one version: name the known-good version", at()...)
		}
	} else if !has(r.Stable) {
		k.add(fmt.Sprintf("stable %q is not a version of this route", r.Stable), at("stable")...)
	}
	if r.Candidate != "" && !has(r.Candidate) {
		k.add(fmt.Sprintf("candidate %q is not a version of this route", r.Candidate), at("candidate")...)
	} else if r.Candidate != "" && r.Candidate == r.Stable {
		k.add(fmt.Sprintf("candidate %q is the stable version; name the version the steps move", r.Candidate), at("candidate")...)
	}
	var total int
	for _, v := range sortedKeys(r.Weights) {
		if !has(v) {
			k.add(fmt.Sprintf("weights name %q, which is not a version of this route (versions: %s)", v, strings.Join(versionOrder(r.Versions, r.VersionOrder), ", ")), at("weights", v)...)
		}
		if w := r.Weights[v]; w < 0 || w > PercentScale {
			k.add(fmt.Sprintf("weight of %q is %s: weights are from 0 to 100", v, w), at("weights", v)...)
		}
		total += int(r.Weights[v])
	}
	if len(r.Weights) > 0 && total != PercentScale {
		k.add(fmt.Sprintf("weights total %s; they must total 100", Percent(total)), at("weights")...)
	}
	if s := r.Sticky; s.Header != "" && !tokenRE.MatchString(s.Header) {
		k.add(fmt.Sprintf("sticky.header %q is not a valid header name", s.Header), at("sticky", "header")...)
	}
	if s := r.Sticky; s.Cookie != "" && !tokenRE.MatchString(s.Cookie) {
		k.add(fmt.Sprintf("sticky.cookie %q is not a valid cookie name", s.Cookie), at("sticky", "cookie")...)
	}
	if h := r.OverrideHeader; h != nil && *h != "" && !tokenRE.MatchString(*h) {
		k.add(fmt.Sprintf("override_header %q is not a valid header name", *h), at("override_header")...)
	}
	for j, ru := range r.Rules {
		p := at("rules", j)
		n := 0
		for _, s := range []string{ru.Header, ru.Cookie, ru.Query} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			k.add(fmt.Sprintf("a rule names exactly one of header, cookie or query; this one names %d", n), p...)
		}
		if ru.Header != "" && !tokenRE.MatchString(ru.Header) {
			k.add(fmt.Sprintf("rule header %q is not a valid header name", ru.Header), append(p, "header")...)
		}
		if ru.Cookie != "" && !tokenRE.MatchString(ru.Cookie) {
			k.add(fmt.Sprintf("rule cookie %q is not a valid cookie name", ru.Cookie), append(p, "cookie")...)
		}
		ops := 0
		if ru.Equals != nil {
			ops++
		}
		if ru.Prefix != "" {
			ops++
		}
		if ru.Regex != "" {
			ops++
			if _, err := regexp.Compile(ru.Regex); err != nil {
				k.add(fmt.Sprintf("rule regex %q does not compile (Go RE2 syntax): %v", ru.Regex, err), append(p, "regex")...)
			}
		}
		if ops > 1 {
			k.add("a rule uses at most one of equals, prefix or regex", p...)
		}
		if ru.Version == "" {
			k.add("a rule needs a version: the version its requests go to", p...)
		} else if !has(ru.Version) {
			k.add(fmt.Sprintf("rule version %q is not a version of this route", ru.Version), append(p, "version")...)
		}
	}
	rb := r.Rollback
	if rb.MaxErrorRate == nil {
		k.add("rollback.max_error_rate is required", at("rollback")...)
	}
	if rb.Window.D() < time.Second {
		k.add("rollback.window must be at least 1s", at("rollback", "window")...)
	}
	if rb.Window.D() > time.Hour {
		k.add("rollback.window must be at most 1h", at("rollback", "window")...)
	}
	if rb.MinRequests < 1 {
		k.add("rollback.min_requests must be at least 1", at("rollback", "min_requests")...)
	}
	if !ratioOK(rb.MaxP99Ratio) {
		k.add(fmt.Sprintf("rollback.max_p99_ratio %v must be 0 (off) or a ratio such as 1.1", rb.MaxP99Ratio), at("rollback", "max_p99_ratio")...)
	}
	if rb.Action != "rollback" && rb.Action != "freeze" {
		k.add(fmt.Sprintf("rollback.action %q must be rollback or freeze", rb.Action), at("rollback", "action")...)
	}
	if len(r.Steps) > 0 && r.Candidate == "" {
		k.add("steps need a candidate: name the version the steps move (candidate: defaults only when a route has two versions)", at("steps")...)
	}
	for j, s := range r.Steps {
		p := at("steps", j)
		n := 0
		if s.SetWeight != nil {
			n++
		}
		if s.Pause != nil {
			n++
		}
		if a := s.Analysis; a != nil {
			n++
			if a.Window.D() < time.Second || a.Window.D() > time.Hour {
				k.add("analysis.window must be from 1s to 1h", append(p, "analysis", "window")...)
			}
			if a.MinRequests < 1 {
				k.add("analysis.min_requests must be at least 1", append(p, "analysis", "min_requests")...)
			}
			if a.MaxErrorRate == nil {
				k.add("analysis.max_error_rate is required", append(p, "analysis")...)
			}
			if !ratioOK(a.MaxP99Ratio) {
				k.add(fmt.Sprintf("analysis.max_p99_ratio %v must be 0 (off) or a ratio such as 1.1", a.MaxP99Ratio), append(p, "analysis", "max_p99_ratio")...)
			}
		}
		if n != 1 {
			k.add(fmt.Sprintf("a step is exactly one of set_weight, pause or analysis; this one has %d", n), p...)
		}
	}
	if hc := r.HealthCheck; hc.Path != "" {
		if !strings.HasPrefix(hc.Path, "/") {
			k.add("health_check.path must start with /", at("health_check", "path")...)
		}
		if hc.Timeout > hc.Interval {
			k.add("health_check.timeout must not exceed health_check.interval", at("health_check", "timeout")...)
		}
		if hc.Healthy < 1 || hc.Unhealthy < 1 {
			k.add("health_check.healthy and unhealthy must be at least 1", at("health_check")...)
		}
	} else if hc.Interval != 0 || hc.Timeout != 0 || hc.Healthy != 0 || hc.Unhealthy != 0 {
		k.add("health_check needs a path", at("health_check")...)
	}
	if n := r.Outlier.Consecutive5xx; n != nil && *n < 0 {
		k.add("outlier.consecutive_5xx must not be negative (0 = off)", at("outlier", "consecutive_5xx")...)
	}
	if a := r.Retries.Attempts; a != nil && (*a < 0 || *a > 10) {
		k.add(fmt.Sprintf("retries.attempts %d must be from 0 to 10 (retries after the first try)", *a), at("retries", "attempts")...)
	}
	if mv := r.Mirror.Version; mv != "" && !has(mv) {
		k.add(fmt.Sprintf("mirror.version %q is not a version of this route", mv), at("mirror", "version")...)
	}
	if r.Mirror.MaxBodyBytes < 0 {
		k.add("mirror.max_body_bytes must not be negative", at("mirror", "max_body_bytes")...)
	}
	if r.Mirror.Version == "" && r.Mirror.Percent != 0 {
		k.add("mirror.percent needs mirror.version", at("mirror")...)
	}
}

// ratioOK accepts 0 (off) and finite ratios above 0.
func ratioOK(r float64) bool { return r >= 0 && !math.IsInf(r, 1) }

// checkBackend accepts host:port with a port from 1 to 65535.
func checkBackend(b string) error {
	if strings.Contains(b, "://") {
		return fmt.Errorf("backend %q must be host:port without a scheme (for HTTPS set the version's tls.enabled: true)", b)
	}
	host, port, err := net.SplitHostPort(b)
	if err != nil || host == "" {
		return fmt.Errorf("backend %q is not host:port, such as 127.0.0.1:9001 or app.internal:80", b)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("backend %q: the port must be a number from 1 to 65535", b)
	}
	if !validHost(host) {
		return fmt.Errorf("backend %q: the host must be an IP address or a host name", b)
	}
	return nil
}

// ParsePrefix reads a CIDR or a bare IP address (a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("trusted_proxies: %q is not a CIDR or IP address", s)
}

// IsLoopback reports whether the host of a listen address is loopback
// ("localhost", 127.0.0.0/8 or ::1). An empty host (all interfaces) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// maxTokenFile bounds what ReadToken reads.
const maxTokenFile = 4 << 10

// ReadToken reads a bearer token file, trimming surrounding white space. The
// file must be a regular file (a symlink to one is fine, as Kubernetes
// secrets are) of at most 4 KiB: a FIFO or a device would block or never end.
func ReadToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %v", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxTokenFile {
		return "", fmt.Errorf("admin.token_file %s must be a regular file of at most %d bytes", path, maxTokenFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %v", err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("admin.token_file %s must be a regular file of at most %d bytes", path, maxTokenFile)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("admin.token_file %s: the token must be at least 16 characters", path)
	}
	return t, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
