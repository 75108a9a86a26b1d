package notify

import (
	"errors"
	"net/url"
	"strings"
)

// redactURL returns raw as it may be logged: scheme://host/path, without the
// userinfo, query and fragment, where webhook secrets usually live. A URL
// that does not parse is not echoed at all.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	if u.Opaque != "" {
		r.Opaque = "REDACTED"
	}
	return r.String()
}

// redactError returns err's text without the secrets of rawURL. net/http's
// *url.Error repeats the request URL (password stripped, query kept), so it
// is reduced to its cause; any remaining copy of the password, query or
// fragment is masked as well.
func redactError(err error, rawURL string) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	msg := err.Error()
	u, perr := url.Parse(rawURL)
	if perr != nil {
		return strings.ReplaceAll(msg, rawURL, "(invalid URL)")
	}
	var secrets []string
	if u.User != nil {
		secrets = append(secrets, u.User.String())
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
	}
	secrets = append(secrets, u.RawQuery, u.Fragment, u.Opaque)
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "REDACTED")
		}
	}
	return msg
}
