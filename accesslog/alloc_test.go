//go:build !race

package accesslog

import (
	"io"
	"testing"
)

// TestLogAllocatesNothing: the request path's part of access logging
// (format into a pooled buffer, queue or drop) allocates nothing.
func TestLogAllocatesNothing(t *testing.T) {
	for _, format := range []string{JSON, Combined} {
		l, err := New(Options{Writer: io.Discard, Format: format, Buffer: 16, Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		e := entry()
		for i := 0; i < 1000; i++ { // make the buffers that circulate
			l.Log(e)
		}
		if n := testing.AllocsPerRun(1000, func() { l.Log(e) }); n != 0 {
			t.Errorf("%s: Log allocates %v times per line, want 0", format, n)
		}
		l.Close()
	}
}

func BenchmarkLog(b *testing.B) {
	l, err := New(Options{Writer: io.Discard, Log: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := entry()
	b.ReportAllocs()
	for b.Loop() {
		l.Log(e)
	}
}
