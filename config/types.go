// Package config decodes, defaults and validates veer's YAML configuration.
//
// Decoding is strict (unknown keys, wrong types and duplicate keys are
// errors), and every problem is reported with the line it comes from, as
// FILE:LINE: message, all of them at once (like Caddy's StrictUnmarshalJSON
// and `nginx -t`). A Config is a plain value: once loaded it is never mutated,
// so it is safe to share between goroutines.
package config

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole file. See SPEC.md and docs/config.md for every key.
type Config struct {
	Listen         string       `yaml:"listen"`
	Admin          Admin        `yaml:"admin"`
	TLS            *ListenerTLS `yaml:"tls"`
	StateFile      string       `yaml:"state_file"`
	TrustedProxies []string     `yaml:"trusted_proxies"`
	DrainTimeout   Duration     `yaml:"drain_timeout"`
	Limits         Limits       `yaml:"limits"`
	RateLimit      RateLimit    `yaml:"rate_limit"`
	AccessLog      AccessLog    `yaml:"access_log"`
	Routes         []Route      `yaml:"routes"`
	Notify         Notify       `yaml:"notify"`

	// File is the path the config was read from ("" when built in code).
	File string `yaml:"-"`
	// root is the parsed document, kept to give validation problems a line.
	root *yaml.Node
	// lines is the file's number of lines: yaml.v3 puts a value left empty
	// at the end of the file on the line after the last.
	lines int
}

// Admin is the admin listener (API, /metrics, dashboard).
type Admin struct {
	Listen    string `yaml:"listen"`
	TokenFile string `yaml:"token_file"`
	// RateLimit is the admin API's per-client limit in requests per second
	// (burst twice that); 0 takes the default of 20.
	RateLimit float64 `yaml:"rate_limit"`
}

// Limits bound what a client may send (an extension of SPEC; see docs/config.md).
type Limits struct {
	MaxHeaderBytes    int      `yaml:"max_header_bytes"`    // 431 above it
	MaxURIBytes       int      `yaml:"max_uri_bytes"`       // 414 above it
	MaxBodyBytes      int64    `yaml:"max_body_bytes"`      // 413 above it; 0 = unlimited
	MaxConnections    int      `yaml:"max_connections"`     // concurrent client connections
	HeaderReadTimeout Duration `yaml:"header_read_timeout"` // slowloris guard
	ClientIdleTimeout Duration `yaml:"client_idle_timeout"` // keep-alive idle
}

// RateLimit is an optional per-client request rate limit (429 above it).
type RateLimit struct {
	RequestsPerSecond float64 `yaml:"requests_per_second"` // 0 = off
	Burst             int     `yaml:"burst"`
}

// ListenerTLS terminates TLS on the proxy listener (an extension of SPEC;
// see docs/config.md). Absent means plain HTTP.
type ListenerTLS struct {
	// Certificates are chosen by SNI among their DNS names; the first is
	// the default for clients without SNI or with a name none covers.
	Certificates []Certificate `yaml:"certificates"`
	MinVersion   string        `yaml:"min_version"` // "1.2" (default) or "1.3"
	// RedirectHTTP, when set, is a plain-HTTP listener that answers every
	// request with 308 to the same URL over https.
	RedirectHTTP string `yaml:"redirect_http"`
	// RedirectPort is the https port put in the redirects (0: the port of
	// listen; 443 is left out of the URL).
	RedirectPort int `yaml:"redirect_port"`
}

// Certificate is one certificate/key pair of files (PEM).
type Certificate struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// AccessLog turns on access logging ("" path = off).
type AccessLog struct {
	Path   string `yaml:"path"`   // stdout, stderr or a file
	Format string `yaml:"format"` // json or combined
}

// Notify holds the webhooks veer calls on events.
type Notify struct {
	Webhooks []Webhook `yaml:"webhooks"`
}

// Webhook is one receiver of events.
type Webhook struct {
	URL    string   `yaml:"url"`
	Events []string `yaml:"events"` // empty = every event type
}

// Route is one routed service and its versions.
type Route struct {
	Name           string             `yaml:"name"`
	Match          Match              `yaml:"match"`
	Stable         string             `yaml:"stable"`
	Versions       map[string]Version `yaml:"versions"`
	Weights        map[string]Percent `yaml:"weights"`
	Sticky         Sticky             `yaml:"sticky"`
	OverrideHeader *string            `yaml:"override_header"`
	Rules          []Rule             `yaml:"rules"`
	Rollback       Rollback           `yaml:"rollback"`
	Candidate      string             `yaml:"candidate"`
	Steps          []Step             `yaml:"steps"`
	HealthCheck    HealthCheck        `yaml:"health_check"`
	Outlier        Outlier            `yaml:"outlier"`
	Timeouts       Timeouts           `yaml:"timeouts"`
	Retries        Retries            `yaml:"retries"`
	Mirror         Mirror             `yaml:"mirror"`

	// VersionOrder lists the versions in the order the file gives them.
	VersionOrder []string `yaml:"-"`
}

// Match selects the requests of a route. Both fields are optional.
type Match struct {
	Host       string `yaml:"host"`        // exact, or *.example.com
	PathPrefix string `yaml:"path_prefix"` // defaults to /
}

// Version is one deployable version of a service.
type Version struct {
	Backends []string    `yaml:"backends"`
	TLS      UpstreamTLS `yaml:"tls"`
}

// UpstreamTLS makes a version's backends HTTPS.
type UpstreamTLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Sticky pins clients to a version.
type Sticky struct {
	Header string   `yaml:"header"`
	Cookie string   `yaml:"cookie"`
	Drain  Duration `yaml:"drain"`
}

// Rule routes matching requests to a version whatever the weights.
// Exactly one of Header, Cookie, Query names what is looked at; with none of
// Equals, Prefix, Regex the rule matches when it is present.
type Rule struct {
	Header  string  `yaml:"header"`
	Cookie  string  `yaml:"cookie"`
	Query   string  `yaml:"query"`
	Equals  *string `yaml:"equals"`
	Prefix  string  `yaml:"prefix"`
	Regex   string  `yaml:"regex"`
	Version string  `yaml:"version"`
}

// Rollback is the automatic rollback of every version but stable.
type Rollback struct {
	MaxErrorRate         *Percent `yaml:"max_error_rate"`
	Window               Duration `yaml:"window"`
	MinRequests          int      `yaml:"min_requests"`
	MaxErrorRateIncrease Percent  `yaml:"max_error_rate_increase"`
	MaxP99Ratio          float64  `yaml:"max_p99_ratio"`
	MaxP99               Duration `yaml:"max_p99"`
	Action               string   `yaml:"action"` // rollback or freeze
}

// Step is one step of a stepped rollout: exactly one field is set.
type Step struct {
	SetWeight *Percent  `yaml:"set_weight"`
	Pause     *Pause    `yaml:"pause"`
	Analysis  *Analysis `yaml:"analysis"`
}

// Pause is a step that waits: a duration, or until `veer resume` when
// written as {}.
type Pause struct {
	Duration   time.Duration
	Indefinite bool
}

// Analysis is a step that judges the candidate over a window.
type Analysis struct {
	Window               Duration `yaml:"window"`
	MinRequests          int      `yaml:"min_requests"`
	MaxErrorRate         *Percent `yaml:"max_error_rate"`
	MaxErrorRateIncrease Percent  `yaml:"max_error_rate_increase"`
	MaxP99Ratio          float64  `yaml:"max_p99_ratio"`
	MaxP99               Duration `yaml:"max_p99"`
}

// HealthCheck is the active HTTP probe of every backend. Off unless Path is set.
type HealthCheck struct {
	Path      string   `yaml:"path"`
	Interval  Duration `yaml:"interval"`
	Timeout   Duration `yaml:"timeout"`
	Healthy   int      `yaml:"healthy"`
	Unhealthy int      `yaml:"unhealthy"`
}

// Outlier is passive ejection of failing backends.
type Outlier struct {
	Consecutive5xx     *int     `yaml:"consecutive_5xx"` // 0 = off
	EjectionTime       Duration `yaml:"ejection_time"`
	MaxEjectionPercent *Percent `yaml:"max_ejection_percent"`
}

// Timeouts bound the upstream exchange.
type Timeouts struct {
	Connect        Duration `yaml:"connect"`
	ResponseHeader Duration `yaml:"response_header"`
	Idle           Duration `yaml:"idle"`
	// UpgradeIdle closes an upgraded connection (WebSocket) after this long
	// without a byte either way (an extension of SPEC).
	UpgradeIdle Duration `yaml:"upgrade_idle"`
}

// Retries retries idempotent requests on another backend of the same version.
type Retries struct {
	// Attempts is the number of retries after the first try (0 = none).
	Attempts *int `yaml:"attempts"`
}

// Mirror copies a share of a route's requests to a version and discards
// the answers (an extension of SPEC).
type Mirror struct {
	Version      string  `yaml:"version"`
	Percent      Percent `yaml:"percent"`
	MaxBodyBytes int64   `yaml:"max_body_bytes"`
}
