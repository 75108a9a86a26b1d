package admin

import (
	"io/fs"
	"net/http"
)

// dashboardHeaders sets the dashboard's security headers: its scripts come
// from this listener only (no CDN, no inline script), and no other site may
// frame it.
func (s *server) dashboardHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// dashboardIndex is GET /: the dashboard page, embedded from
// admin/dashboard/index.html.
func (s *server) dashboardIndex(w http.ResponseWriter, r *http.Request) {
	s.dashboardHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, err := fs.ReadFile(s.dash, "index.html")
		if err != nil {
			panic(err) // embedded at build time: a bug
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(page)
	})).ServeHTTP(w, r)
}
