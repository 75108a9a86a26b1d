package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/veer-proxy/veer/sock"
)

// TestOneCoreBatching runs the real binary on one P (GOMAXPROCS=1, as
// the README's one-core setup and bench run it), where each scheduler
// round's socket sends and receives go to the kernel together
// (package sock, io_uring), under concurrent traffic of small answers,
// answers larger than a socket buffer and request bodies, and checks
// every byte that comes back, then that the calls were batched
// (veer_io_batched_calls_total over veer_io_batches_total).
func TestOneCoreBatching(t *testing.T) {
	pattern := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*31) + seed
		}
		return b
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			io.WriteString(w, "ok\n")
		case "/big": // ?n=SIZE&seed=S: a patterned answer
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			seed, _ := strconv.Atoi(r.URL.Query().Get("seed"))
			w.Header().Set("Content-Length", strconv.Itoa(n))
			w.Write(pattern(n, byte(seed)))
		case "/echo": // the request body back
			body, _ := io.ReadAll(r.Body)
			w.Write(body)
		default:
			io.WriteString(w, "small "+r.URL.RawQuery)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	t.Setenv("GOMAXPROCS", "1") // for veer's process, which inherits it
	v := StartVeer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
routes:
  - name: app
    stable: blue
    versions:
      blue: {backends: [%q]}
    weights: {blue: 100}
`, ln.Addr().String()))

	const clients = 24
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	// run has every client make each requests (kinds: 3 for all three
	// kinds in turn, 1 for small GETs only) and checks every answer.
	run := func(each, kinds int) {
		t.Helper()
		errs := make(chan error, clients)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if err := oneCoreRequest(hc, v.ProxyURL(), c, i*3/kinds, pattern); err != nil {
						errs <- fmt.Errorf("client %d request %d: %v", c, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	counts := func() (float64, float64) {
		return metricValue(t, v.AdminURL(), "veer_io_batched_calls_total"), metricValue(t, v.AdminURL(), "veer_io_batches_total")
	}

	run(30, 3) // small answers, answers larger than a socket buffer, bodies
	calls0, batches0 := counts()
	const each = 50
	run(each, 1) // small GETs only: rounds of many short calls
	calls, batches := counts()
	calls, batches = calls-calls0, batches-batches0
	t.Logf("small GETs: %v socket calls in %v batches", calls, batches)
	if !sock.Batching() {
		t.Skip("io_uring is not available here: veer makes each call on its own, as the traffic above just checked")
	}
	// A small GET on a kept-alive connection is four batched calls: the
	// send to the backend and the receive of its answer, the send of the
	// held answer to the client and the receive of its next request (after
	// a client's last request, that receive is still waiting).
	if min := float64(4 * clients * (each - 1)); calls < min {
		t.Errorf("veer_io_batched_calls_total grew by %v, want at least %v for %d small GETs", calls, min, clients*each)
	}
	if batches == 0 || calls/batches < 1.5 {
		t.Errorf("%v calls in %v batches: a round's calls did not go together", calls, batches)
	}
}

// oneCoreRequest makes the i-th request of client c, one of three kinds
// in turn, and checks the answer.
func oneCoreRequest(hc *http.Client, base string, c, i int, pattern func(int, byte) []byte) error {
	var (
		req  *http.Request
		want []byte
		err  error
	)
	switch i % 3 {
	case 0:
		q := fmt.Sprintf("c=%d&i=%d", c, i)
		want = []byte("small " + q)
		req, err = http.NewRequest("GET", base+"/small?"+q, nil)
	case 1:
		n := 200<<10 + c*1000 + i // larger than a loopback socket takes at once
		want = pattern(n, byte(c+i))
		req, err = http.NewRequest("GET", fmt.Sprintf("%s/big?n=%d&seed=%d", base, n, c+i), nil)
	case 2:
		want = pattern(64<<10+i, byte(c))
		req, err = http.NewRequest("POST", base+"/echo", bytes.NewReader(want))
	}
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s %s: status %d: %.200s", req.Method, req.URL.Path, resp.StatusCode, got)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s %s: got %d bytes, want %d (first difference at %d)", req.Method, req.URL.Path, len(got), len(want), firstDiff(got, want))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
