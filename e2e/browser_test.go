package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/device"
)

// chromiumPath finds a headless-capable Chromium: $VEER_CHROMIUM, else
// Debian's chromium (which .ci/run installs), else Chrome. Without one the
// test fails in CI (CI=true) and is skipped elsewhere.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VEER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const how = "no Chromium found (looked for $VEER_CHROMIUM, chromium, chromium-browser, google-chrome); " +
		"install it with `apt-get install -y chromium` (.ci/run does)"
	if os.Getenv("CI") == "true" {
		t.Fatal(how)
	}
	t.Skip(how + "; skipped outside CI")
	return ""
}

// screenshotDir is $VEER_SCREENSHOT_DIR, else the test's artifact
// directory (kept with `go test -artifacts`, a temporary one otherwise).
func screenshotDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("VEER_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

const browserToken = "browser-e2e-token-0123456789"

func browserConfig(tokenFile string, blue, canary, cBlue, cGreen *Backend) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token_file: %q}
state_file: veer-state.json
routes:
  - name: shop
    stable: blue
    versions:
      blue:   {backends: [%q]}
      canary: {backends: [%q]}
    weights: {blue: 80, canary: 20}
    candidate: canary
    sticky: {header: X-User-ID}
    rollback: {max_error_rate: 50, window: 10s, min_requests: 10}
  - name: checkout
    match: {path_prefix: /checkout/}
    stable: blue
    versions:
      blue:  {backends: [%q]}
      green: {backends: [%q]}
    weights: {blue: 100, green: 0}
    candidate: green
    steps:
      - set_weight: 30
      - pause: {}
      - set_weight: 60
    rollback: {window: 10s}
`, tokenFile, blue.Addr, canary.Addr, cBlue.Addr, cGreen.Addr)
}

// TestBrowserDashboard opens the dashboard of the real binary in headless
// Chromium: it asks for the token, shows the routes, weights, charts, steps,
// events and revisions, rolls a route back and undoes it from its buttons
// (the API confirms both), fits a phone, and turns stale when veer stops.
func TestBrowserDashboard(t *testing.T) {
	chromium := chromiumPath(t)
	blue, canary := NewBackend(t, "blue"), NewBackend(t, "canary")
	cBlue, cGreen := NewBackend(t, "checkout-blue"), NewBackend(t, "checkout-green")
	canary.FailEvery(25) // 4%: the error chart has something to show
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(browserToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := StartVeer(t, browserConfig(tokenFile, blue, canary, cBlue, cGreen))

	// Traffic for the charts: about 40 requests a second over both routes.
	trafficCtx, stopTraffic := context.WithCancel(context.Background())
	var trafficWG sync.WaitGroup
	trafficWG.Go(func() {
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-trafficCtx.Done():
				return
			case <-tick.C:
			}
			path := "/"
			if i%3 == 0 {
				path = "/checkout/"
			}
			req, _ := http.NewRequestWithContext(trafficCtx, "GET", v.ProxyURL()+path, nil)
			req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", rand.IntN(200)))
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	})
	t.Cleanup(func() { stopTraffic(); trafficWG.Wait() })

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.WindowSize(1440, 1000),
		chromedp.Flag("hide-scrollbars", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelTimeout()

	// Start the browser, then collect the page's uncaught exceptions and
	// accept every confirm dialog (the dashboard asks before it changes
	// traffic).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("cannot start Chromium %s: %v", chromium, err)
	}
	var (
		exMu       sync.Mutex
		exceptions []string
		confirms   []string
	)
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() {
				exMu.Lock()
				exceptions = append(exceptions, m.String())
				exMu.Unlock()
			}
		}
	}()
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			exMu.Lock()
			confirms = append(confirms, ev.Message)
			exMu.Unlock()
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				t.Errorf("accept dialog %q: %v", ev.Message, err)
			}
		}
	}()

	js := func(expr string) bool {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		return err == nil && ok
	}
	text := func(sel string) string {
		s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel)))
		return s
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	routeWeights := func(route string) map[string]float64 {
		t.Helper()
		code, body := adminCall(t, v, "GET", "/api/v1/routes/"+route, "", browserToken)
		if code != 200 {
			t.Fatalf("GET route %s: %d %s", route, code, body)
		}
		var r struct {
			Weights map[string]float64 `json:"weights"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		return r.Weights
	}
	shot := func(name string) string {
		t.Helper()
		js(`window.scrollTo(0, 0), true`) // the sticky header at the top of the picture
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		path := filepath.Join(screenshotDir(t), name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
		return path
	}

	// The API needs a token: the page asks for it.
	do("open the dashboard", chromedp.Navigate(v.AdminURL()+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	do("enter the token",
		chromedp.SendKeys(chromedp.ID("token"), browserToken),
		chromedp.Click(chromedp.CSS(`#login button[type=submit]`)))

	// Routes and weights are shown: the stacked bar and the table.
	Eventually(t, 20*time.Second, "the shop route with blue 80% and canary 20%", func() bool {
		return js(`(() => {
			const s = (v) => document.querySelector('[data-route=shop] .seg[data-version=' + v + ']');
			return !!s('blue') && s('blue').dataset.weight === '80' && s('canary').dataset.weight === '20';
		})()`)
	})
	if got := text(`[data-route=shop] .versions`); !strings.Contains(got, "blue") || !strings.Contains(got, "80%") ||
		!strings.Contains(got, "canary") || !strings.Contains(got, "20%") {
		t.Errorf("the versions table of shop reads %q, want blue 80%% and canary 20%%", got)
	}
	if got := text(`[data-route=shop] .bar`); !strings.Contains(got, "blue 80%") || !strings.Contains(got, "canary 20%") {
		t.Errorf("the weights bar of shop reads %q", got)
	}
	if got := text(`[data-route=checkout] .step-text`); !strings.Contains(got, "step 2 of 3") || !strings.Contains(got, "paused") {
		t.Errorf("checkout's step reads %q, want step 2 of 3, paused", got)
	}
	if js(`document.querySelector('[data-route=checkout] button[data-action=resume]').disabled`) {
		t.Errorf("Resume is disabled on a paused rollout")
	}

	// Live charts: a line per version with traffic, built from the polls.
	Eventually(t, 30*time.Second, "request and error charts with lines for blue and canary", func() bool {
		return js(`document.querySelectorAll('[data-route=shop] .chart[data-metric=rps] path.line').length === 2 &&
			document.querySelectorAll('[data-route=shop] .chart[data-metric=err] path.line').length >= 1 &&
			/blue/.test(document.querySelector('[data-route=shop] .chart[data-metric=rps] .legend').innerText)`)
	})
	// The event timeline and the history have loaded (the first step of
	// checkout is an event and a revision).
	Eventually(t, 10*time.Second, "events and revisions", func() bool {
		return js(`document.querySelectorAll('#events li[data-type=step]').length >= 1 &&
			document.querySelectorAll('[data-route=checkout] .revs tbody tr').length === 2`)
	})
	time.Sleep(8 * time.Second) // a few more seconds of chart

	// Roll shop back from its button.
	do("click rollback", chromedp.Click(chromedp.CSS(`[data-route=shop] button[data-action=rollback]`)))
	Eventually(t, 15*time.Second, "the API to show shop rolled back to blue", func() bool {
		w := routeWeights("shop")
		return w["blue"] == 100 && w["canary"] == 0
	})
	exMu.Lock()
	if len(confirms) == 0 || !strings.Contains(confirms[0], "Roll back shop") {
		t.Errorf("rollback asked %q, want a confirmation naming the route", confirms)
	}
	exMu.Unlock()
	Eventually(t, 10*time.Second, "the page to show blue 100%, the rollback event and revision", func() bool {
		return js(`document.querySelector('[data-route=shop] .seg[data-version=blue]').dataset.weight === '100' &&
			document.querySelectorAll('#events li[data-type=rollback]').length === 1 &&
			document.querySelector('[data-route=shop] .revs tbody tr.current').dataset.revision === '2' &&
			/rollback done/.test(document.querySelector('[data-route=shop] .msg').innerText)`)
	})
	if got := text(`[data-route=shop] .phase`); !strings.EqualFold(got, "rolled-back") {
		t.Errorf("shop's phase reads %q after the rollback, want rolled-back", got)
	}
	time.Sleep(3 * time.Second) // the charts show the canary's traffic gone
	desktop := shot("dashboard.png")

	// A phone: one column, nothing wider than the screen.
	do("emulate a phone", chromedp.Emulate(device.IPhone13))
	Eventually(t, 10*time.Second, "the phone layout", func() bool {
		return js(`window.innerWidth < 500 && document.documentElement.scrollWidth <= window.innerWidth + 1`)
	})
	time.Sleep(1500 * time.Millisecond) // charts redraw at the new width
	if js(`document.documentElement.scrollWidth > window.innerWidth + 1`) {
		t.Errorf("on a phone the page is wider than the screen")
	}
	if wide, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('.table-wrap, .plot'))
		.filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.closest('[data-route]').dataset.route + ' ' + e.className)`)); len(wide) > 0 {
		t.Errorf("on a phone these scroll sideways: %q", wide)
	}
	shot("dashboard-phone.png")
	do("back to the laptop", chromedp.EmulateReset(), chromedp.EmulateViewport(1440, 1000))

	// Undo to revision 1 from the history: 80/20 again.
	do("click undo", chromedp.Click(chromedp.CSS(`[data-route=shop] button[data-action=undo][data-revision="1"]`)))
	Eventually(t, 15*time.Second, "the API to show shop back at blue 80 canary 20", func() bool {
		w := routeWeights("shop")
		return w["blue"] == 80 && w["canary"] == 20
	})
	Eventually(t, 10*time.Second, "the page to show the undo", func() bool {
		return js(`document.querySelector('[data-route=shop] .seg[data-version=canary]').dataset.weight === '20' &&
			document.querySelectorAll('#events li[data-type=undo]').length === 1`)
	})

	exMu.Lock()
	if len(exceptions) > 0 {
		t.Errorf("the page threw: %q", exceptions)
	}
	exMu.Unlock()

	// Honest about staleness: when veer goes away the page says so.
	stopTraffic()
	trafficWG.Wait()
	v.Stop()
	Eventually(t, 15*time.Second, "the page to show that its data is stale", func() bool {
		return js(`document.body.classList.contains('stale') && /stale: data is \d+s old/.test(document.getElementById('conn-text').innerText) &&
			!document.getElementById('banner').hidden`)
	})
	shot("dashboard-stale.png")
	t.Logf("dashboard screenshot (for docs/dashboard.png): %s", desktop)
}
