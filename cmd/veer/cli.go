package main

// The control commands (SPEC "Command line"): thin clients of the admin
// API. Each parses its flags and arguments, makes one or two API calls and
// prints a table, a one-line summary or, with -o json, the API's JSON.
//
// Exit codes: 0 on success; 1 when the API refuses (its error message is
// printed) or cannot be reached; 2 on bad usage.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// defaultAdmin is the admin API's address when neither -admin nor
// $VEER_ADMIN says otherwise.
const defaultAdmin = "http://127.0.0.1:9901"

// cliTimeout bounds each API call.
const cliTimeout = 10 * time.Second

// errUsage marks bad usage (exit 2).
var errUsage = errors.New("usage")

// command is one control command.
type command struct {
	name    string
	args    string // the positional arguments, as usage shows them
	summary string
	minArgs int
	maxArgs int // -1 = any number
	run     func(c *client, args []string) error
	// flags, when set, defines the command's own flags on fs for one
	// invocation and returns its run (which sees their values).
	flags func(fs *flag.FlagSet) func(c *client, args []string) error
}

// client is one invocation of a control command: where the API is, how to
// print, and where to. It is used by one goroutine.
type client struct {
	cmd    string
	base   string
	output string
	token  string
	http   *http.Client
	stdout io.Writer
	stderr io.Writer
}

// commands are the control commands; read-only after init.
var commands = []*command{
	{name: "status", args: "[ROUTE]", summary: "routes: versions, weights, live error rate, p99, health, rollout phase",
		maxArgs: 1, run: runStatus},
	{name: "weights", args: "ROUTE VERSION=PCT ...", summary: "set the route's weights (they must total 100; versions left out get 0)",
		minArgs: 2, maxArgs: -1, run: runWeights},
	{name: "switch", args: "ROUTE VERSION", summary: "instant blue-green switch: 100% to VERSION",
		minArgs: 2, maxArgs: 2, run: func(c *client, a []string) error {
			return c.mutate(a[0], "switch", map[string]string{"version": a[1]})
		}},
	{name: "promote", args: "ROUTE [VERSION]", summary: "make VERSION the stable one at 100% (default: the candidate with most weight)",
		minArgs: 1, maxArgs: 2, run: func(c *client, a []string) error {
			body := map[string]string{}
			if len(a) == 2 {
				body["version"] = a[1]
			}
			return c.mutate(a[0], "promote", body)
		}},
	{name: "rollback", args: "ROUTE", summary: "all traffic back to the stable version now",
		minArgs: 1, maxArgs: 1, run: func(c *client, a []string) error { return c.mutate(a[0], "rollback", nil) }},
	{name: "pause", args: "ROUTE", summary: "hold a stepped rollout where it is",
		minArgs: 1, maxArgs: 1, run: func(c *client, a []string) error { return c.mutate(a[0], "pause", nil) }},
	{name: "resume", args: "ROUTE", summary: "continue a paused stepped rollout",
		minArgs: 1, maxArgs: 1, run: func(c *client, a []string) error { return c.mutate(a[0], "resume", nil) }},
	{name: "history", args: "ROUTE", summary: "the route's revisions, newest last",
		minArgs: 1, maxArgs: 1, run: runHistory},
	undoCommand(),
}

func undoCommand() *command {
	return &command{name: "undo", args: "ROUTE [-to-revision N]", summary: "restore revision N as a new revision (default: the one before the current)",
		minArgs: 1, maxArgs: 1,
		flags: func(fs *flag.FlagSet) func(c *client, args []string) error {
			to := fs.Int("to-revision", 0, "restore revision `N` (default: the one before the current)")
			return func(c *client, a []string) error {
				body := map[string]int{}
				if isSet(fs, "to-revision") {
					if *to < 1 {
						return fmt.Errorf("%w: -to-revision must be 1 or more, not %d", errUsage, *to)
					}
					body["revision"] = *to
				}
				return c.mutate(a[0], "undo", body)
			}
		}}
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func init() {
	for _, c := range commands {
		controlCommands[c.name] = c.main
	}
}

// main runs the command with args and returns its exit code.
func (cmd *command) main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed below, help to stdout
	admin := os.Getenv("VEER_ADMIN")
	if admin == "" {
		admin = defaultAdmin
	}
	base := fs.String("admin", admin, "admin API `URL`: $VEER_ADMIN, else "+defaultAdmin)
	output := fs.String("o", "table", "output `format`: table, or json (the API's JSON, for scripts)")
	run := cmd.run
	if cmd.flags != nil {
		run = cmd.flags(fs)
	}
	args, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		cmd.usage(fs, stdout)
		return 0
	}
	if err == nil && *output != "table" && *output != "json" {
		err = fmt.Errorf("-o must be table or json, not %q", *output)
	}
	if err == nil && (len(args) < cmd.minArgs || (cmd.maxArgs >= 0 && len(args) > cmd.maxArgs)) {
		err = fmt.Errorf("wrong number of arguments (%d)", len(args))
	}
	if err != nil {
		fmt.Fprintf(stderr, "veer %s: %s\nusage: veer %s %s [flags]; see 'veer %s -h'\n",
			cmd.name, strings.TrimPrefix(err.Error(), errUsage.Error()+": "), cmd.name, cmd.args, cmd.name)
		return 2
	}
	c := &client{
		cmd:    cmd.name,
		base:   normalizeBase(*base),
		output: *output,
		token:  strings.TrimSpace(os.Getenv("VEER_ADMIN_TOKEN")),
		http:   &http.Client{Timeout: cliTimeout},
		stdout: stdout,
		stderr: stderr,
	}
	if err := run(c, args); err != nil {
		msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
		fmt.Fprintf(stderr, "veer %s: %s\n", cmd.name, oneLine(msg))
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

func (cmd *command) usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "usage: veer %s %s [flags]\n\n%s.\n\nflags:\n", cmd.name, cmd.args, cmd.summary)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintf(w, "\nThe token, when the admin API needs one, is read from $VEER_ADMIN_TOKEN.\n")
}

// parseInterspersed parses flags wherever they are among the arguments
// (`veer undo shop -to-revision 3` as well as `veer undo -to-revision 3
// shop`); after "--" everything is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// normalizeBase accepts "HOST:PORT" as well as a URL.
func normalizeBase(s string) string {
	s = strings.TrimRight(strings.TrimSpace(s), "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// call makes one API call and returns the JSON body of a 2xx answer. A 429
// is retried (the call was not applied) after its Retry-After, up to three
// times within ten seconds.
func (c *client) call(method, path string, body any) ([]byte, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	waited := time.Duration(0)
	for attempt := 0; ; attempt++ {
		data, retry, err := c.once(method, path, payload)
		if retry <= 0 || attempt == 3 || waited+retry > cliTimeout {
			return data, err
		}
		time.Sleep(retry)
		waited += retry
	}
}

func (c *client) once(method, path string, payload []byte) (data []byte, retry time.Duration, err error) {
	u := c.base + path
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return nil, 0, fmt.Errorf("bad admin API URL %q: %v", c.base, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "veer-cli")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, 0, fmt.Errorf("cannot reach veer admin API at %s: %v", c.base, err)
	}
	defer resp.Body.Close()
	data, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read the answer of veer admin API at %s: %v", c.base, err)
	}
	if resp.StatusCode/100 == 2 {
		if !json.Valid(data) {
			return nil, 0, fmt.Errorf("the answer of %s is not JSON: is %s veer's admin address?", u, c.base)
		}
		return data, 0, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		return nil, 0, fmt.Errorf("%s %s: HTTP %s (not an answer of veer's admin API: is %s its address?)", method, u, resp.Status, c.base)
	}
	msg := e.Error
	if resp.StatusCode == http.StatusUnauthorized && c.token == "" {
		msg += " ($VEER_ADMIN_TOKEN is not set)"
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retry = time.Duration(s) * time.Second
		}
	}
	return nil, retry, errors.New(msg)
}

// printJSON prints the API's JSON, indented.
func (c *client) printJSON(data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := c.stdout.Write(buf.Bytes())
	return err
}

func routePath(route string) string { return "/api/v1/routes/" + url.PathEscape(route) }

// The parts of the API's JSON the CLI prints.
type (
	apiBackend struct {
		Address string `json:"address"`
		Healthy bool   `json:"healthy"`
	}
	apiVersion struct {
		Backends  []apiBackend `json:"backends"`
		Requests  uint64       `json:"requests"`
		ErrorRate float64      `json:"error_rate"`
		P99ms     float64      `json:"p99_ms"`
	}
	apiStep struct {
		Index   int    `json:"index"`
		Total   int    `json:"total"`
		Current string `json:"current"`
		Paused  bool   `json:"paused"`
		Done    bool   `json:"done"`
	}
	apiRoute struct {
		Name       string                `json:"name"`
		Stable     string                `json:"stable"`
		Revision   int                   `json:"revision"`
		Phase      string                `json:"phase"`
		Weights    map[string]float64    `json:"weights"`
		Versions   map[string]apiVersion `json:"versions"`
		Order      []string              `json:"version_order"`
		Step       *apiStep              `json:"step"`
		RolledBack map[string]string     `json:"rolled_back"`
		Frozen     string                `json:"frozen"`
	}
	apiRevision struct {
		Revision int                `json:"revision"`
		Time     time.Time          `json:"time"`
		Weights  map[string]float64 `json:"weights"`
		Stable   string             `json:"stable"`
		Source   string             `json:"source"`
		Reason   string             `json:"reason"`
	}
	apiChange struct {
		Route    apiRoute    `json:"route"`
		Revision apiRevision `json:"revision"`
		Changed  bool        `json:"changed"`
	}
)

// order is the route's versions in config order (sorted when the API does
// not say).
func (r *apiRoute) order() []string {
	if len(r.Order) > 0 {
		return r.Order
	}
	var out []string
	for v := range r.Versions {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

func runStatus(c *client, args []string) error {
	var routes []apiRoute
	var data []byte
	var err error
	if len(args) == 1 {
		if data, err = c.call("GET", routePath(args[0]), nil); err != nil {
			return err
		}
		var r apiRoute
		err = json.Unmarshal(data, &r)
		routes = []apiRoute{r}
	} else {
		if data, err = c.call("GET", "/api/v1/routes", nil); err != nil {
			return err
		}
		var list struct {
			Routes []apiRoute `json:"routes"`
		}
		err = json.Unmarshal(data, &list)
		routes = list.Routes
	}
	if err != nil {
		return fmt.Errorf("unexpected answer from the admin API: %v", err)
	}
	if c.output == "json" {
		return c.printJSON(data)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tVERSION\tWEIGHT\tREQUESTS\tERR%\tP99\tHEALTHY\tPHASE\tREVISION")
	for _, r := range routes {
		for _, v := range r.order() {
			name := v
			if v == r.Stable {
				name += "*"
			}
			vv := r.Versions[v]
			healthy := 0
			for _, b := range vv.Backends {
				if b.Healthy {
					healthy++
				}
			}
			errPct, p99 := "-", "-"
			if vv.Requests > 0 {
				errPct = fmtNum(vv.ErrorRate) + "%"
				p99 = fmtMs(vv.P99ms)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s%%\t%d\t%s\t%s\t%d/%d\t%s\t%d\n",
				r.Name, name, fmtNum(r.Weights[v]), vv.Requests, errPct, p99, healthy, len(vv.Backends), r.Phase, r.Revision)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, "(* stable version)")
	for _, r := range routes {
		for _, note := range notes(r) {
			fmt.Fprintf(c.stdout, "%s: %s\n", r.Name, note)
		}
	}
	return nil
}

// notes are what the table cannot show: the current step of a stepped
// rollout, rollbacks and a freeze.
func notes(r apiRoute) []string {
	var out []string
	if s := r.Step; s != nil && !s.Done {
		n := stepLabel(s.Index, s.Total)
		if s.Current != "" {
			n += ": " + s.Current
		}
		if s.Paused {
			n += " (paused)"
		}
		out = append(out, n)
	}
	var rb []string
	for v := range r.RolledBack {
		rb = append(rb, v)
	}
	sort.Strings(rb)
	for _, v := range rb {
		out = append(out, fmt.Sprintf("%s rolled back: %s", v, oneLine(r.RolledBack[v])))
	}
	if r.Frozen != "" {
		out = append(out, "frozen: "+oneLine(r.Frozen))
	}
	return out
}

// fmtNum prints a percentage without needless decimals: 90, 12.5, 0.01.
func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// fmtMs prints a latency in milliseconds the way Go prints durations.
func fmtMs(ms float64) string {
	d := time.Duration(math.Round(ms * float64(time.Millisecond)))
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func fmtWeights(order []string, w map[string]float64) string {
	seen := map[string]bool{}
	var parts []string
	for _, v := range order {
		seen[v] = true
		parts = append(parts, v+"="+fmtNum(w[v]))
	}
	var rest []string
	for v := range w {
		if !seen[v] {
			rest = append(rest, v)
		}
	}
	sort.Strings(rest)
	for _, v := range rest {
		parts = append(parts, v+"="+fmtNum(w[v]))
	}
	return strings.Join(parts, " ")
}

func runWeights(c *client, args []string) error {
	route := args[0]
	weights := map[string]float64{}
	for _, a := range args[1:] {
		v, pct, ok := strings.Cut(a, "=")
		if !ok || v == "" || pct == "" {
			return fmt.Errorf("%w: %q is not VERSION=PCT, e.g. blue=90", errUsage, a)
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(pct, "%"), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: weight %q of %s is not a number", errUsage, pct, v)
		}
		if _, dup := weights[v]; dup {
			return fmt.Errorf("%w: version %s is given twice", errUsage, v)
		}
		weights[v] = f
	}
	return c.mutate(route, "weights", map[string]any{"weights": weights})
}

// mutate calls a route's mutating endpoint and prints the outcome.
func (c *client) mutate(route, op string, body any) error {
	method := "POST"
	if op == "weights" {
		method = "PUT"
	}
	if body == nil {
		body = struct{}{}
	}
	data, err := c.call(method, routePath(route)+"/"+op, body)
	if err != nil {
		return err
	}
	if c.output == "json" {
		return c.printJSON(data)
	}
	var ch apiChange
	if err := json.Unmarshal(data, &ch); err != nil {
		return fmt.Errorf("unexpected answer from the admin API: %v", err)
	}
	fmt.Fprintln(c.stdout, summary(op, ch))
	return nil
}

// summary is a mutation's one-line outcome.
func summary(op string, ch apiChange) string {
	r, rev := ch.Route, ch.Revision
	if op == "pause" || op == "resume" {
		step := ""
		if s := r.Step; s != nil && !s.Done {
			step = " at " + stepLabel(s.Index, s.Total)
			if s.Current != "" {
				step += " (" + s.Current + ")"
			}
		}
		switch {
		case op == "pause" && !ch.Changed:
			return fmt.Sprintf("%s: rollout already paused%s", r.Name, step)
		case op == "pause":
			return fmt.Sprintf("%s: rollout paused%s", r.Name, step)
		}
		return fmt.Sprintf("%s: rollout resumed%s; phase %s", r.Name, step, r.Phase)
	}
	if !ch.Changed {
		return fmt.Sprintf("%s: unchanged at revision %d", r.Name, rev.Revision)
	}
	s := fmt.Sprintf("%s: revision %d (%s): %s", r.Name, rev.Revision, rev.Source, fmtWeights(r.order(), rev.Weights))
	if op == "promote" || op == "undo" {
		s += ", stable " + rev.Stable
	}
	return s
}

func runHistory(c *client, args []string) error {
	data, err := c.call("GET", routePath(args[0])+"/history", nil)
	if err != nil {
		return err
	}
	if c.output == "json" {
		return c.printJSON(data)
	}
	var h struct {
		Revisions []apiRevision `json:"revisions"`
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return fmt.Errorf("unexpected answer from the admin API: %v", err)
	}
	var order []string // the route's version order, if the route says
	if rd, err := c.call("GET", routePath(args[0]), nil); err == nil {
		var r apiRoute
		if json.Unmarshal(rd, &r) == nil {
			order = r.Order
		}
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REV\tTIME\tSOURCE\tWEIGHTS\tSTABLE\tREASON")
	for _, r := range h.Revisions {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.Revision, r.Time.Local().Format("2006-01-02 15:04:05"),
			r.Source, fmtWeights(order, r.Weights), r.Stable, oneLine(r.Reason))
	}
	return tw.Flush()
}

// stepLabel is "step 2/5", or "all 5 steps done (promoting)" in the moment
// between the last step and the promotion that follows it.
func stepLabel(index, total int) string {
	if index >= total {
		return fmt.Sprintf("all %d steps done (promoting)", total)
	}
	return fmt.Sprintf("step %d/%d", index+1, total)
}
