package accesslog

import (
	"strconv"
	"unicode/utf8"
)

// appendJSON appends e as one JSON object and a newline:
//
//	{"time":"2026-01-02T15:04:05.000Z","client":"10.0.0.1","method":"GET",
//	 "path":"/a?b=1","proto":"HTTP/1.1","host":"shop.example.com","status":200,
//	 "bytes":512,"duration":0.001234,"route":"shop","version":"canary",
//	 "backend":"10.0.0.9:8080","request_id":"...","referer":"","user_agent":"curl/8"}
//
// duration is in seconds. Strings are escaped as JSON requires; bytes that
// are not UTF-8 become U+FFFD.
func appendJSON(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","client":"`...)
	if e.Client.IsValid() {
		b = e.Client.AppendTo(b)
	}
	b = append(b, `","method":`...)
	b = jsonString(b, e.Method)
	b = append(b, `,"path":`...)
	b = jsonString(b, e.Path)
	b = append(b, `,"proto":`...)
	b = jsonString(b, e.Proto)
	b = append(b, `,"host":`...)
	b = jsonString(b, e.Host)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendFloat(b, e.Duration.Seconds(), 'f', 6, 64)
	b = append(b, `,"route":`...)
	b = jsonStr(b, e.Route)
	b = append(b, `,"version":`...)
	b = jsonStr(b, e.Version)
	b = append(b, `,"backend":`...)
	b = jsonStr(b, e.Backend)
	b = append(b, `,"request_id":`...)
	b = jsonString(b, e.RequestID)
	b = append(b, `,"referer":`...)
	b = jsonString(b, e.Referer)
	b = append(b, `,"user_agent":`...)
	b = jsonString(b, e.UserAgent)
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// jsonString appends s as a quoted JSON string.
func jsonString(b, s []byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c >= 0x20:
				b = append(b, c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// jsonStr is jsonString for the names veer itself chose (route, version,
// backend), which need no escaping beyond the quotes' rules.
func jsonStr(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c < 0x20 {
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return append(b, '"')
}

// appendCombined appends e in the combined log format of Apache and nginx,
// followed by veer's own fields as key=value:
//
//	10.0.0.1 - - [02/Jan/2026:15:04:05 +0000] "GET /a?b=1 HTTP/1.1" 200 512 "-" "curl/8" route=shop version=canary backend=10.0.0.9:8080 request_id=... duration=0.001234
//
// Quoted fields escape '"', '\' and bytes outside printable ASCII as \xHH,
// as nginx does; an empty field is "-".
func appendCombined(b []byte, e *Entry) []byte {
	if e.Client.IsValid() {
		b = e.Client.AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " - - ["...)
	b = e.Time.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, `] "`...)
	b = escaped(b, e.Method, false)
	b = append(b, ' ')
	b = escaped(b, e.Path, false)
	b = append(b, ' ')
	b = escaped(b, e.Proto, false)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	if e.Bytes >= 0 {
		b = strconv.AppendInt(b, e.Bytes, 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, ` "`...)
	b = dash(b, e.Referer, false)
	b = append(b, `" "`...)
	b = dash(b, e.UserAgent, false)
	b = append(b, `" route=`...)
	b = dashStr(b, e.Route)
	b = append(b, " version="...)
	b = dashStr(b, e.Version)
	b = append(b, " backend="...)
	b = dashStr(b, e.Backend)
	b = append(b, " request_id="...)
	b = dash(b, e.RequestID, true)
	b = append(b, " duration="...)
	b = strconv.AppendFloat(b, e.Duration.Seconds(), 'f', 6, 64)
	return append(b, '\n')
}

func dash(b, s []byte, space bool) []byte {
	if len(s) == 0 {
		return append(b, '-')
	}
	return escaped(b, s, space)
}

func dashStr(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s); i++ {
		b = escapeByte(b, s[i], true)
	}
	return b
}

// escaped appends s with '"', '\', control bytes and bytes >= 0x7f as
// \xHH (upper-case hex, as nginx), and spaces too when space is set (an unquoted field).
func escaped(b, s []byte, space bool) []byte {
	for _, c := range s {
		b = escapeByte(b, c, space)
	}
	return b
}

const upperHex = "0123456789ABCDEF"

func escapeByte(b []byte, c byte, space bool) []byte {
	if c == '"' || c == '\\' || c < 0x20 || c >= 0x7f || (space && c == ' ') {
		return append(b, '\\', 'x', upperHex[c>>4], upperHex[c&0xf])
	}
	return append(b, c)
}
