package notify

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func lowest(int64) int64    { return 0 }
func highest(n int64) int64 { return n - 1 }

func TestExpJitter(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name          string
		lo, hi        time.Duration
		attempt       int
		wantLo, wantH time.Duration
	}{
		{"first retry", 500 * ms, 30 * time.Second, 0, 500 * ms, time.Second},
		{"second retry", 500 * ms, 30 * time.Second, 1, time.Second, 2 * time.Second},
		{"fourth retry", 500 * ms, 30 * time.Second, 3, 4 * time.Second, 8 * time.Second},
		{"capped", 500 * ms, 30 * time.Second, 10, 15 * time.Second, 30 * time.Second},
		{"huge attempt", 500 * ms, 30 * time.Second, 1 << 20, 15 * time.Second, 30 * time.Second},
		{"min equals max", time.Second, time.Second, 4, time.Second, time.Second},
		{"max below min", time.Second, ms, 2, time.Second, time.Second},
		{"never below min", 10 * ms, 12 * ms, 3, 10 * ms, 12 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expJitter(tt.lo, tt.hi, tt.attempt, lowest); got != tt.wantLo {
				t.Errorf("shortest wait = %v, want %v", got, tt.wantLo)
			}
			if got := expJitter(tt.lo, tt.hi, tt.attempt, highest); got != tt.wantH {
				t.Errorf("longest wait = %v, want %v", got, tt.wantH)
			}
		})
	}
}

func TestBackoffRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		retryAfter string // "" sends no header
		want       time.Duration
	}{
		{"seconds", "2", 2 * time.Second},
		{"zero", "0", 0},
		{"seconds over the cap", "3600", 5 * time.Second},
		{"absurd seconds", "99999999999999999999999", 5 * time.Second},
		{"date", now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second},
		{"date over the cap", now.Add(time.Hour).Format(http.TimeFormat), 5 * time.Second},
		{"date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"negative is ignored", "-5", 100 * time.Millisecond},
		{"garbage is ignored", "soon", 100 * time.Millisecond},
		{"no header", "", 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := New(nil, Options{MaxRetryAfter: 5 * time.Second})
			n.now = func() time.Time { return now }
			n.jitter = lowest
			resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}}
			if tt.retryAfter != "" {
				resp.Header.Set("Retry-After", tt.retryAfter)
			}
			if got := n.backoff(100*time.Millisecond, time.Second, 0, resp); got != tt.want {
				t.Errorf("backoff with Retry-After %q = %v, want %v", tt.retryAfter, got, tt.want)
			}
		})
	}
	t.Run("connection error", func(t *testing.T) {
		n := New(nil, Options{})
		n.jitter = highest
		if got, want := n.backoff(100*time.Millisecond, time.Second, 1, nil), 400*time.Millisecond; got != want {
			t.Errorf("backoff without a response = %v, want %v", got, want)
		}
	})
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"userinfo and token", "https://user:pass@hooks.example/x?token=abc", "https://hooks.example/x"},
		{"user only", "https://user@hooks.example/x", "https://hooks.example/x"},
		{"fragment", "https://hooks.example/x#sig=abc", "https://hooks.example/x"},
		{"port and escaped path", "http://127.0.0.1:8080/a%2Fb?k=v", "http://127.0.0.1:8080/a%2Fb"},
		{"plain", "https://hooks.example/veer", "https://hooks.example/veer"},
		{"unparsable is not echoed", "https://user:pa ss@hooks.example/%zz?token=abc", "(invalid URL)"},
		{"opaque", "mailto:secret@example.com", "mailto:REDACTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactURL(tt.in); got != tt.want {
				t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactError(t *testing.T) {
	raw := "https://user:pass@hooks.example/x?token=abc"
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"url.Error keeps only its cause",
			&url.Error{Op: "Post", URL: "https://hooks.example/x?token=abc", Err: errors.New("connection refused")},
			"connection refused"},
		{"secrets elsewhere are masked",
			errors.New("POST https://user:pass@hooks.example/x?token=abc giving up"),
			"POST https://REDACTED@hooks.example/x?REDACTED giving up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := redactError(tt.err, raw)
			if got != tt.want {
				t.Errorf("redactError = %q, want %q", got, tt.want)
			}
			if strings.Contains(got, "pass") || strings.Contains(got, "abc") {
				t.Errorf("redactError leaked a secret: %q", got)
			}
		})
	}
}
