// Package accesslog writes veer's access log: one line per request, as JSON
// or in the Apache/nginx combined format, to stdout, stderr or a file.
//
// Writing never blocks a request. Log formats the line into a reused buffer
// on the request's goroutine and hands it to a bounded channel; one
// goroutine drains the channel into a buffered writer and flushes whenever
// the channel is empty. When the channel is full the line is dropped and
// counted in veer_access_log_dropped_total, like nginx's
// `access_log ... buffer=` losing lines under a stalled disk would, but
// without ever stalling the proxy. Reopen (SIGUSR1) closes and reopens the
// file, for logrotate's rename-then-signal.
package accesslog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Formats.
const (
	JSON     = "json"
	Combined = "combined"
)

// DefaultBuffer is how many lines may wait for the writer before new
// ones are dropped.
const DefaultBuffer = 8192

// Entry is one request. Its byte slices may point into fasthttp's buffers:
// Log copies what it needs before it returns and keeps nothing.
type Entry struct {
	Time      time.Time // when the request arrived
	Duration  time.Duration
	Client    netip.Addr // the peer address
	Method    []byte
	Path      []byte // the request target as received: path and query
	Proto     []byte // HTTP/1.1
	Host      []byte
	Status    int
	Bytes     int64 // response body bytes; -1 when unknown
	Referer   []byte
	UserAgent []byte
	Route     string // "" when no route matched
	Version   string
	Backend   string
	RequestID []byte
}

// Options configure a Logger.
type Options struct {
	// Path is "stdout", "stderr" or a file, opened for appending (created
	// with mode 0644).
	Path   string
	Format string // JSON (the default) or Combined
	// Buffer is the number of lines that may wait (DefaultBuffer when 0).
	Buffer int
	// Writer, when set, is written to instead of Path (tests).
	Writer io.Writer
	// Registerer, when set, gets veer_access_log_dropped_total.
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

type line struct{ b []byte }

// Logger is a running access log. Safe for concurrent use; Log never
// blocks.
type Logger struct {
	path    string
	combine bool
	lines   chan *line
	reopen  chan struct{}
	done    chan struct{}
	stopped chan struct{}
	closed  atomic.Bool
	free    chan *line // buffers to reuse: a free list that, unlike a sync.Pool, GC does not empty
	dropped prometheus.Counter
	nDrop   atomic.Int64
	log     *slog.Logger

	// owned by the writer goroutine
	out     io.Writer
	file    *os.File
	w       *bufio.Writer
	lastErr time.Time
}

// New opens the log and starts its writer.
func New(o Options) (*Logger, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	switch o.Format {
	case "", JSON, Combined:
	default:
		return nil, fmt.Errorf("accesslog: format %q must be json or combined", o.Format)
	}
	l := &Logger{
		path:    o.Path,
		combine: o.Format == Combined,
		lines:   make(chan *line, o.Buffer),
		reopen:  make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		log:     o.Log,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "veer_access_log_dropped_total",
			Help: "Access log lines dropped because the writer fell behind (its buffer was full)."}),
	}
	l.free = make(chan *line, o.Buffer+64)
	if o.Registerer != nil {
		if err := o.Registerer.Register(l.dropped); err != nil {
			return nil, err
		}
	}
	switch {
	case o.Writer != nil:
		l.out = o.Writer
	case o.Path == "stdout":
		l.out = os.Stdout
	case o.Path == "stderr":
		l.out = os.Stderr
	case o.Path == "":
		return nil, errors.New("accesslog: no path")
	default:
		f, err := openFile(o.Path)
		if err != nil {
			return nil, err
		}
		l.file, l.out = f, f
	}
	l.w = bufio.NewWriterSize(l.out, 64<<10)
	go l.run()
	return l, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("access_log: %w", err)
	}
	return f, nil
}

// Log formats e and queues the line; a full queue drops it and counts it.
// It allocates nothing once enough buffers circulate (at most Buffer+64).
func (l *Logger) Log(e *Entry) {
	if l.closed.Load() {
		return
	}
	var ln *line
	select {
	case ln = <-l.free:
	default: // every buffer is in flight: at most Buffer+64 are ever made
		ln = &line{b: make([]byte, 0, 512)}
	}
	if l.combine {
		ln.b = appendCombined(ln.b[:0], e)
	} else {
		ln.b = appendJSON(ln.b[:0], e)
	}
	select {
	case l.lines <- ln:
	default:
		l.dropped.Inc()
		l.nDrop.Add(1)
		l.put(ln)
	}
}

func (l *Logger) put(ln *line) {
	if cap(ln.b) > 64<<10 { // a huge line's buffer is not kept
		return
	}
	select {
	case l.free <- ln:
	default:
	}
}

// Dropped returns the number of lines dropped so far.
func (l *Logger) Dropped() int64 { return l.nDrop.Load() }

// Reopen asks the writer to flush, close and reopen the file (SIGUSR1,
// after logrotate renamed it). It does not wait. Nothing to do for stdout
// and stderr.
func (l *Logger) Reopen() {
	select {
	case l.reopen <- struct{}{}:
	default: // one is already pending
	}
}

// Close writes the lines already queued, flushes and closes the file.
// Lines logged after Close are discarded.
func (l *Logger) Close() error {
	if l.closed.Swap(true) {
		<-l.stopped
		return nil
	}
	close(l.done)
	<-l.stopped
	return nil
}

func (l *Logger) run() {
	defer close(l.stopped)
	for {
		select {
		case ln := <-l.lines:
			l.write(ln)
			if len(l.lines) == 0 {
				l.flush()
			}
		case <-l.reopen:
			l.flush()
			l.doReopen()
		case <-l.done:
		drain:
			for {
				select {
				case ln := <-l.lines:
					l.write(ln)
				default:
					break drain
				}
			}
			l.flush()
			if l.file != nil {
				l.file.Close()
			}
			return
		}
	}
}

func (l *Logger) write(ln *line) {
	_, err := l.w.Write(ln.b)
	l.put(ln)
	if err != nil {
		l.writeFailed(err)
	}
}

func (l *Logger) flush() {
	if err := l.w.Flush(); err != nil {
		l.writeFailed(err)
		// bufio.Writer keeps failing after an error: start afresh so a
		// disk that frees up, or a reopen, brings lines back.
		l.w.Reset(l.out)
	}
}

// writeFailed logs a write error at most once a minute.
func (l *Logger) writeFailed(err error) {
	if now := time.Now(); now.Sub(l.lastErr) >= time.Minute {
		l.lastErr = now
		l.log.Error("access log write failed: lines are being lost", "path", l.path, "err", err)
	}
}

func (l *Logger) doReopen() {
	if l.file == nil {
		return
	}
	f, err := openFile(l.path)
	if err != nil {
		l.log.Error("access log not reopened: still writing to the old file; fix the path and send SIGUSR1 again", "path", l.path, "err", err)
		return
	}
	l.file.Close()
	l.file, l.out = f, f
	l.w.Reset(f)
	l.log.Info("access log reopened", "path", l.path)
}
