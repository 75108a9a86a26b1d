// veer dashboard: one page, plain JS, no framework, no build step, nothing
// from another origin (the Content-Security-Policy allows 'self' only).
//
// Data: GET /api/v1/routes every second; the charts are built from these
// polls. Error rate and p99 are over the route's rollback window (what the
// rollback judges). Requests/s is the increase of veer_requests_total in
// /metrics over the last 3 seconds, so that it drops at once when a version
// loses its traffic (a window count would lag by the window's length); when
// /metrics cannot be read at all, it is the window's count over its length.
// GET /api/v1/routes/{name}/history when a route's revision changes.
// GET /api/v1/events once, then the live stream /api/v1/events/stream, read
// with fetch() so that the Authorization header can be sent (EventSource
// cannot send headers).
//
// The token, when the API answers 401, is asked for and kept in this tab's
// sessionStorage only. The page says how old its data is and turns visibly
// stale when polling fails.
"use strict";

const POLL_MS = 1000;
const STALE_MS = 4000; // no fresh data for this long: the page says it is stale
const MAX_SPAN_MS = 5 * 60 * 1000; // the charts show at most the last 5 minutes
const MIN_SPAN_MS = 30 * 1000;
const MAX_EVENTS = 300;
const HISTORY_ROWS = 8;
const TOKEN_KEY = "veer-admin-token";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// ---------------------------------------------------------------- API

class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const h = {Accept: "application/json"};
  const t = token();
  if (t) h.Authorization = "Bearer " + t;
  return h;
}

// api calls the admin API and returns its JSON, or throws an APIError with
// the API's own message ({"error": "..."}).
async function api(method, path, body) {
  const headers = authHeaders();
  const init = {method, headers, cache: "no-store"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 8000);
  init.signal = ctl.signal;
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new APIError(0, e.name === "AbortError" ? "veer did not answer within 8s" : "cannot reach veer (" + e.message + ")");
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    // not JSON: the status line says enough
  }
  const msg = (data && data.error) || resp.status + " " + resp.statusText;
  if (resp.status === 401) {
    askToken(token() ? "veer refused this token: " + msg : msg);
    throw new APIError(401, "the admin API needs a token");
  }
  if (needToken) {
    needToken = false;
    updateTokenButton();
  }
  if (!resp.ok) throw new APIError(resp.status, msg);
  return data;
}

// ---------------------------------------------------------------- token

const login = $("#login");

let needToken = false; // the API answered 401 to the token this tab has (or to none)
let tokenDismissed = false; // the person closed the dialog: do not push it again

function askToken(why) {
  needToken = true;
  $("#login-why").textContent = why || "This veer's admin API needs a bearer token.";
  updateTokenButton();
  if (!login.open && !tokenDismissed) {
    if (typeof login.showModal === "function") login.showModal();
    else login.setAttribute("open", "");
    $("#token").focus();
  }
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("#token").value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  $("#token").value = "";
  needToken = false;
  tokenDismissed = false;
  login.close();
  updateTokenButton();
  poll(true);
  restartStream();
});

login.addEventListener("cancel", () => {
  tokenDismissed = true; // Escape: the header button brings the dialog back
});

// The header button enters a token the API asks for, or forgets the one
// this tab keeps.
function updateTokenButton() {
  const b = $("#token-btn");
  b.hidden = !token() && !needToken;
  b.textContent = needToken ? "enter token" : "forget token";
}

$("#token-btn").addEventListener("click", () => {
  if (needToken) {
    tokenDismissed = false;
    askToken($("#login-why").textContent);
    return;
  }
  sessionStorage.removeItem(TOKEN_KEY);
  updateTokenButton();
  poll(true);
});

// ---------------------------------------------------------------- formatting

const NAMED_COLORS = {
  blue: "#3b82f6", green: "#10b981", canary: "#f59e0b", red: "#ef4444",
  yellow: "#eab308", orange: "#f97316", purple: "#8b5cf6", stable: "#3b82f6",
};
const PALETTE = ["#8b5cf6", "#ec4899", "#14b8a6", "#f97316", "#64748b", "#0ea5e9", "#84cc16"];

function colorOf(route, name) {
  if (NAMED_COLORS[name]) return NAMED_COLORS[name];
  const i = (route.version_order || []).indexOf(name);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}

function fmtNum(v) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 10000) return (v / 1000).toFixed(0) + "k";
  if (a >= 1000) return (v / 1000).toFixed(1).replace(/\.0$/, "") + "k";
  if (a >= 100 || a === 0) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1).replace(/\.0$/, "");
  return v.toFixed(2).replace(/0$/, "");
}

function fmtPct(v) {
  return v == null || !isFinite(v) ? "–" : fmtNum(v) + "%";
}

function fmtMs(v) {
  if (v == null || !isFinite(v)) return "–";
  if (v >= 1000) return fmtNum(v / 1000) + " s";
  return fmtNum(v) + " ms";
}

function fmtWeight(w) {
  return (Math.round((w || 0) * 100) / 100) + "%";
}

function fmtAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + (s % 60) + "s";
  return Math.floor(m / 60) + "h " + (m % 60) + "m";
}

function fmtAgo(t) {
  const d = Date.now() - t;
  if (d < 5000) return "just now";
  return fmtAge(d) + " ago";
}

function fmtClock(t) {
  return new Date(t).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
}

// parseDuration reads a Go duration ("10s", "1m30s", "250ms") in ms.
function parseDuration(s) {
  if (!s) return 0;
  const units = {ns: 1e-6, "us": 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000};
  let total = 0;
  const re = /([\d.]+)(ns|us|µs|ms|s|m|h)/g;
  let m;
  while ((m = re.exec(s)) !== null) total += parseFloat(m[1]) * units[m[2]];
  return total;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k === "title" || k === "role" || k.startsWith("aria-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

// ---------------------------------------------------------------- state

const routes = new Map(); // name -> RouteUI
const events = []; // newest last
const seenEvents = new Set();
let lastOK = 0; // when the last poll succeeded (ms)
let lastError = "";
let firstPoll = true;

// ---------------------------------------------------------------- charts

// chartSVG draws one chart as SVG markup: a line per version over time,
// gridlines, and event markers. Built as a string and parsed by the HTML
// parser, which puts <svg> in its namespace.
function chartSVG({width, height, t0, t1, series, fmt, floor, cap, markers}) {
  const padL = 44, padR = 8, padT = 8, padB = 18;
  const w = Math.max(10, width - padL - padR), h = Math.max(10, height - padT - padB);
  let max = floor;
  for (const s of series) for (const p of s.points) if (p[1] != null && p[1] > max) max = p[1];
  max = Math.min(niceCeil(max * 1.1), cap || Infinity);
  const x = (t) => padL + ((t - t0) / (t1 - t0)) * w;
  const y = (v) => padT + h - (v / max) * h;
  let out = `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img">`;
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f).toFixed(1);
    out += `<line class="grid" x1="${padL}" x2="${padL + w}" y1="${yy}" y2="${yy}"/>`;
    out += `<text class="axis" x="${padL - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${esc(fmt(max * f))}</text>`;
  }
  const span = t1 - t0;
  const step = span > 3 * 60000 ? 60000 : span > 90000 ? 30000 : 15000;
  for (let ago = 0; ago <= span; ago += step) {
    const xx = x(t1 - ago).toFixed(1);
    const label = ago === 0 ? "now" : "−" + (ago >= 60000 ? ago / 60000 + "m" : ago / 1000 + "s");
    out += `<text class="axis" x="${xx}" y="${height - 4}" text-anchor="${ago === 0 ? "end" : "middle"}">${label}</text>`;
  }
  for (const m of markers) {
    if (m.t < t0 || m.t > t1) continue;
    const xx = x(m.t).toFixed(1);
    out += `<line class="marker ${esc(m.type)}" x1="${xx}" x2="${xx}" y1="${padT}" y2="${padT + h}"><title>${esc(fmtClock(m.t) + " " + m.type + ": " + m.message)}</title></line>`;
  }
  for (const s of series) {
    let d = "";
    let pen = false;
    let last = null;
    for (const [t, v] of s.points) {
      if (v == null || t < t0) {
        pen = false;
        continue;
      }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
      last = [t, v];
    }
    if (d) out += `<path class="line" d="${d}" stroke="${s.color}"/>`;
    if (last) out += `<circle cx="${x(last[0]).toFixed(1)}" cy="${y(last[1]).toFixed(1)}" r="2.5" fill="${s.color}"/>`;
  }
  return out + "</svg>";
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

const METRICS = {
  rps: {fmt: fmtNum, floor: 1, value: (v) => v.rps, show: fmtNum},
  err: {fmt: (v) => fmtNum(v) + "%", floor: 1, cap: 100, value: (v) => v.err, show: fmtPct},
  p99: {fmt: (v) => fmtNum(v), floor: 5, value: (v) => v.p99, show: fmtMs},
};

// ---------------------------------------------------------------- rates

const RATE_SPAN_MS = 3000; // requests/s is the counters' increase over about this long
const counterHist = new Map(); // "route\0version" -> [{t, n}], oldest first
let countersWork = false; // /metrics has answered once: no fallback to window averages

// fetchCounters reads veer_requests_total from /metrics and returns the
// total per "route\0version" (all codes), or null when /metrics cannot be
// read (the charts then fall back to the window averages).
async function fetchCounters() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 5000);
  try {
    const resp = await fetch("/metrics", {headers: {...authHeaders(), Accept: "text/plain"}, cache: "no-store", signal: ctl.signal});
    if (!resp.ok) return null;
    const text = await resp.text();
    countersWork = true;
    const out = new Map();
    const line = /^veer_requests_total\{([^}]*)\}\s+(\S+)/gm;
    let m;
    while ((m = line.exec(text)) !== null) {
      const labels = {};
      const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[1])) !== null) labels[l[1]] = l[2];
      const key = labels.route + "\u0000" + labels.version;
      out.set(key, (out.get(key) || 0) + parseFloat(m[2]));
    }
    return out;
  } catch (e) {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

// counterRate adds a counter reading and returns the rate per second over
// about RATE_SPAN_MS, or null until there are two readings (and after veer
// restarted, which resets its counters).
function counterRate(key, t, n) {
  let h = counterHist.get(key);
  if (!h) counterHist.set(key, (h = []));
  if (h.length && n < h[h.length - 1].n) h.length = 0; // counter reset
  h.push({t, n});
  while (h.length > 2 && h[1].t <= t - RATE_SPAN_MS) h.shift();
  if (h.length < 2) return null;
  const ref = h[0];
  const dt = (t - ref.t) / 1000;
  return dt > 0 ? (n - ref.n) / dt : null;
}

// ---------------------------------------------------------------- a route

class RouteUI {
  constructor(name) {
    this.name = name;
    this.view = null;
    this.samples = []; // {t, v: {version: {rps, err, p99}}}
    this.revisions = null;
    this.historyRev = -1;
    this.showAllHistory = false;
    this.msgTimer = 0;
    this.busy = false;
    const node = $("#route-tpl").content.firstElementChild.cloneNode(true);
    node.dataset.route = name;
    node.id = "route-" + name;
    this.node = node;
    $(".route-name", node).textContent = name;
    for (const b of $$("button[data-action]", node)) {
      b.addEventListener("click", () => this.act(b.dataset.action));
    }
    $(".more", node).addEventListener("click", () => {
      this.showAllHistory = !this.showAllHistory;
      this.renderHistory();
    });
  }

  // sample records one poll: requests/s from the counters of /metrics
  // (over the last RATE_SPAN_MS, so a version that stops getting traffic
  // drops to 0 at once) or, without them, the window's average; the error
  // rate and p99 over the rollback window, as the judge sees them.
  sample(t, view, counts) {
    const windowMs = parseDuration(view.window) || 30000;
    const v = {};
    for (const [name, vv] of Object.entries(view.versions)) {
      const n = vv.requests || 0;
      let rps = null;
      const total = counts ? counts.get(this.name + "\u0000" + name) : undefined;
      if (total !== undefined) {
        rps = counterRate(this.name + "\u0000" + name, t, total);
      } else if (!counts && !countersWork) {
        rps = n / (windowMs / 1000);
      }
      // A version with no live traffic gets no error rate or p99 point: its
      // window only drains (after a rollback its figures would drift on
      // the last few requests).
      const live = n > 0 && rps !== 0;
      v[name] = {rps, err: live ? vv.error_rate : null, p99: live ? vv.p99_ms : null};
    }
    this.samples.push({t, v});
    while (this.samples.length && this.samples[0].t < t - MAX_SPAN_MS - 10000) this.samples.shift();
  }

  update(view) {
    const prev = this.view;
    this.view = view;
    const n = this.node;
    const order = view.version_order && view.version_order.length ? view.version_order : Object.keys(view.versions).sort();
    const m = view.match || {};
    $(".match", n).textContent = (m.host || "any host") + (m.path_prefix || "/");
    const phase = $(".phase", n);
    phase.textContent = view.phase;
    phase.className = "phase badge phase-" + view.phase;
    $(".rev", n).textContent = "revision " + view.revision + " · window " + view.window;

    // Callouts: a rollback or a freeze, in words.
    const callouts = $(".callouts", n);
    callouts.replaceChildren();
    for (const [ver, reason] of Object.entries(view.rolled_back || {})) {
      callouts.append(el("p", {class: "callout bad"},
        el("strong", {text: ver + " was rolled back"}), " — " + reason + ". It stays at 0% until someone sets its weight again."));
    }
    if (view.frozen) {
      callouts.append(el("p", {class: "callout warn"}, el("strong", {text: "Rollout frozen"}), " — " + view.frozen));
    }

    // The stepped rollout.
    const st = view.step;
    const stepBox = $(".step", n);
    stepBox.hidden = !st;
    if (st) {
      const dots = $(".step-dots", n);
      if (dots.children.length !== st.total) {
        dots.replaceChildren(...Array.from({length: st.total}, () => el("span", {class: "step-dot"})));
      }
      const halted = view.phase === "rolled-back";
      Array.from(dots.children).forEach((d, i) => {
        d.className = "step-dot" + (halted ? " halted" : i < st.index || st.done ? " done" : i === st.index ? " current" : "");
      });
      let text;
      if (halted) text = "rollout stopped: rolled back" + (st.done ? "" : " at step " + Math.min(st.index + 1, st.total) + " of " + st.total);
      else if (st.done) text = "rollout complete";
      else text = "step " + Math.min(st.index + 1, st.total) + " of " + st.total + (st.current ? ": " + st.current : "");
      if (st.paused && !st.done) text += " — paused";
      $(".step-text", n).textContent = text;
    }

    // Weights bar.
    const bar = $(".bar", n);
    const segs = new Map($$(".seg", bar).map((s) => [s.dataset.version, s]));
    for (const name of order) {
      let s = segs.get(name);
      if (!s) {
        s = el("div", {class: "seg", "data-version": name}, el("span", {class: "seg-label"}));
        bar.append(s);
      }
      const w = view.weights[name] || 0;
      s.style.width = w + "%";
      s.style.background = colorOf(view, name);
      s.dataset.weight = String(w);
      s.title = name + " " + fmtWeight(w);
      s.classList.toggle("zero", w === 0);
      $(".seg-label", s).textContent = w >= 12 ? name + " " + fmtWeight(w) : w >= 5 ? fmtWeight(w) : "";
      segs.delete(name);
    }
    for (const s of segs.values()) s.remove();

    // Versions table.
    const last = this.samples[this.samples.length - 1];
    const rows = order.map((name) => {
      const vv = view.versions[name] || {backends: []};
      const w = view.weights[name] || 0;
      const tags = [];
      if (name === view.stable) tags.push(el("span", {class: "tag stable", text: "stable"}));
      if (name === view.candidate && name !== view.stable) tags.push(el("span", {class: "tag cand", text: "candidate"}));
      if (view.rolled_back && view.rolled_back[name]) tags.push(el("span", {class: "tag bad", text: "rolled back", title: view.rolled_back[name]}));
      const up = vv.backends.filter((b) => b.healthy).length;
      const be = el("span", {class: "backends"},
        ...vv.backends.map((b) => el("span", {
          class: "be " + (b.healthy ? "up" : "down") + (b.ejected ? " ejected" : ""),
          title: b.address + (b.healthy ? " healthy" : b.ejected ? " ejected (outlier)" : " down"),
        })),
        el("span", {class: "be-count", text: up + "/" + vv.backends.length}));
      const rps = last && last.v[name] ? last.v[name].rps : null;
      const errCls = vv.requests > 0 && vv.error_rate >= 1 ? "num bad" : "num";
      return el("tr", {"data-version": name, class: w === 0 ? "idle" : ""},
        el("td", {}, el("span", {class: "swatch"}), el("span", {class: "vname", text: name}), " ", ...tags),
        el("td", {class: "num weight", text: fmtWeight(w)}),
        el("td", {class: "num", text: fmtNum(rps)}),
        el("td", {class: errCls, text: vv.requests > 0 ? fmtPct(vv.error_rate) : "–", title: vv.errors + " of " + vv.requests + " requests over " + view.window}),
        el("td", {class: "num opt", text: vv.requests > 0 ? fmtMs(vv.p50_ms) : "–"}),
        el("td", {class: "num", text: vv.requests > 0 ? fmtMs(vv.p99_ms) : "–"}),
        el("td", {class: "ph"}, be));
    });
    $(".versions tbody", n).replaceChildren(...rows);
    for (const tr of $$(".versions tbody tr", n)) $(".swatch", tr).style.background = colorOf(view, tr.dataset.version);

    // The version picker keeps the person's choice across updates.
    const pick = $(".version-pick", n);
    const want = order.join(",");
    if (pick.dataset.versions !== want) {
      const keep = pick.value;
      pick.replaceChildren(...order.map((v) => el("option", {value: v, text: v})));
      pick.dataset.versions = want;
      const cand = view.candidate && order.includes(view.candidate) ? view.candidate : order.find((v) => v !== view.stable);
      pick.value = order.includes(keep) ? keep : cand || order[0];
    }
    const paused = view.step ? view.step.paused : false;
    const stepping = view.step && !view.step.done;
    $("button[data-action=pause]", n).disabled = this.busy || !stepping || paused;
    $("button[data-action=resume]", n).disabled = this.busy || !paused;
    for (const a of ["switch", "promote", "rollback"]) $(`button[data-action=${a}]`, n).disabled = this.busy;

    this.drawCharts();
    if (!prev || prev.revision !== view.revision || this.historyRev !== view.revision) this.loadHistory(view.revision);
  }

  drawCharts() {
    const view = this.view;
    if (!view) return;
    const order = view.version_order && view.version_order.length ? view.version_order : Object.keys(view.versions).sort();
    const now = Date.now();
    const first = this.samples.length ? this.samples[0].t : now;
    const span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, now - first));
    const t0 = now - span;
    const markers = events.filter((e) => e.route === this.name && e.t >= t0 && e.type !== "backend-up");
    for (const fig of $$(".chart", this.node)) {
      const key = fig.dataset.metric;
      const mdef = METRICS[key];
      const series = [];
      const legend = [];
      const last = this.samples[this.samples.length - 1];
      for (const name of order) {
        const pts = this.samples.map((s) => [s.t, s.v[name] ? mdef.value(s.v[name]) : null]);
        const hasAny = pts.some((p) => p[1] != null && (key !== "rps" || p[1] > 0));
        if (!hasAny) continue;
        const color = colorOf(view, name);
        series.push({name, color, points: pts});
        const cur = last && last.v[name] ? mdef.value(last.v[name]) : null;
        legend.push(el("span", {class: "lg"}, el("i", {class: "sw"}), name + " ", el("b", {text: mdef.show(cur)})));
        legend[legend.length - 1].firstChild.style.background = color;
      }
      $(".legend", fig).replaceChildren(...legend);
      const plot = $(".plot", fig);
      const width = Math.floor(plot.clientWidth) || 300;
      plot.innerHTML = chartSVG({
        width, height: 130, t0, t1: now, series, fmt: mdef.fmt, floor: mdef.floor, cap: mdef.cap,
        markers,
      });
    }
  }

  async loadHistory(rev) {
    if (this.loadingHistory) return;
    this.loadingHistory = true;
    try {
      const data = await api("GET", "/api/v1/routes/" + encodeURIComponent(this.name) + "/history");
      this.revisions = data.revisions || [];
      this.historyRev = rev;
      this.renderHistory();
    } catch (e) {
      // polling shows reachability; the next revision change retries
    } finally {
      this.loadingHistory = false;
    }
  }

  renderHistory() {
    const revs = (this.revisions || []).slice().reverse(); // newest first
    const current = this.view ? this.view.revision : -1;
    const shown = this.showAllHistory ? revs : revs.slice(0, HISTORY_ROWS);
    const rows = shown.map((r) => {
      const t = Date.parse(r.time);
      const mini = el("span", {class: "mini"});
      const order = this.view && this.view.version_order ? this.view.version_order : Object.keys(r.weights).sort();
      for (const v of order) {
        const w = r.weights[v] || 0;
        if (w <= 0) continue;
        const s = el("i", {title: v + " " + fmtWeight(w)});
        s.style.width = w + "%";
        s.style.background = colorOf(this.view || {}, v);
        mini.append(s);
      }
      const text = order.filter((v) => (r.weights[v] || 0) > 0).map((v) => v + " " + fmtWeight(r.weights[v])).join(" · ");
      let undo = null;
      if (r.revision === current) {
        undo = el("span", {class: "tag now", text: "current"});
      } else {
        undo = el("button", {type: "button", class: "small", "data-action": "undo", "data-revision": String(r.revision), text: "Undo to #" + r.revision,
          title: "Restore revision " + r.revision + "'s weights and stable version"});
        undo.addEventListener("click", () => this.act("undo", r.revision));
      }
      return el("tr", {"data-revision": String(r.revision), class: r.revision === current ? "current" : ""},
        el("td", {class: "num", text: String(r.revision)}),
        el("td", {class: "when", "data-t": String(t), text: fmtAgo(t), title: new Date(t).toLocaleString()}),
        el("td", {class: "ph"}, el("span", {class: "src src-" + r.source, text: r.source})),
        el("td", {class: "wcol"}, mini, el("span", {class: "wtext", text: text + (r.stable ? "  (stable " + r.stable + ")" : "")})),
        el("td", {class: "reason opt", text: r.reason || ""}),
        el("td", {class: "undo"}, undo));
    });
    $(".revs tbody", this.node).replaceChildren(...rows);
    const more = $(".more", this.node);
    more.hidden = revs.length <= HISTORY_ROWS;
    more.textContent = this.showAllHistory ? "show the newest " + HISTORY_ROWS : "show all " + revs.length + " revisions";
  }

  say(text, bad) {
    const p = $(".msg", this.node);
    p.textContent = text;
    p.className = "msg " + (bad ? "bad" : "ok");
    p.hidden = false;
    clearTimeout(this.msgTimer);
    if (!bad) this.msgTimer = setTimeout(() => { p.hidden = true; }, 8000);
  }

  async act(action, revision) {
    const v = this.view;
    if (!v || this.busy) return;
    const version = $(".version-pick", this.node).value;
    const base = "/api/v1/routes/" + encodeURIComponent(this.name) + "/";
    let body;
    let question = "";
    switch (action) {
      case "switch":
        body = {version};
        question = `Switch ${this.name}: send 100% of its traffic to ${version} now?`;
        break;
      case "promote":
        body = {version};
        question = `Promote ${version}: make it ${this.name}'s stable version at 100%?`;
        break;
      case "rollback":
        question = `Roll back ${this.name}: send all traffic to its stable version (${v.stable}) now?`;
        break;
      case "undo":
        body = {revision};
        question = `Undo ${this.name} to revision ${revision}?`;
        break;
    }
    if (question && !window.confirm(question)) return;
    this.busy = true;
    this.update(v);
    try {
      const res = await api("POST", base + action, body);
      const rev = res.revision ? res.revision.revision : undefined;
      if (res.changed === false) this.say(action + ": nothing to change, already in effect" + (rev ? " (revision " + rev + ")" : ""), false);
      else this.say(action + " done" + (rev ? ": now at revision " + rev : ""), false);
      if (res.route) {
        this.busy = false;
        this.update(res.route);
      }
    } catch (e) {
      this.say(action + " failed: " + e.message, true);
    } finally {
      this.busy = false;
      if (this.view) this.update(this.view);
    }
  }
}

// ---------------------------------------------------------------- polling

let pollTimer = 0;
let polling = false;

async function poll(now) {
  if (now) clearTimeout(pollTimer);
  if (polling) return;
  polling = true;
  let delay = POLL_MS;
  try {
    const [data, counts] = await Promise.all([api("GET", "/api/v1/routes"), fetchCounters()]);
    const t = Date.now();
    lastOK = t;
    lastError = "";
    const names = new Set();
    const main = $("#routes");
    for (const view of data.routes || []) {
      names.add(view.name);
      let ui = routes.get(view.name);
      if (!ui) {
        ui = new RouteUI(view.name);
        routes.set(view.name, ui);
        main.append(ui.node);
      } else if (ui.node.parentNode !== main) {
        main.append(ui.node);
      }
      ui.sample(t, view, counts);
      ui.update(view);
    }
    for (const [name, ui] of routes) {
      if (!names.has(name)) {
        ui.node.remove();
        routes.delete(name);
      }
    }
    $("#empty").hidden = names.size > 0;
    if (firstPoll) {
      firstPoll = false;
      startEvents();
    }
  } catch (e) {
    lastError = e.message;
    if (e.status === 429) delay = 5000;
  } finally {
    polling = false;
    renderConn();
    pollTimer = setTimeout(poll, delay);
  }
}

function renderConn() {
  const age = lastOK ? Date.now() - lastOK : Infinity;
  const stale = !lastOK || age > STALE_MS;
  const conn = $("#conn");
  let text;
  if (!lastOK) text = lastError ? "no data: " + lastError : "connecting…";
  else if (stale) text = "stale: data is " + fmtAge(age) + " old";
  else text = "live · data is " + fmtAge(age) + " old";
  $("#conn-text").textContent = text;
  conn.className = "conn " + (!lastOK && !lastError ? "" : stale ? "stale" : "live");
  document.body.classList.toggle("stale", Boolean(lastOK) && stale);
  const banner = $("#banner");
  if (lastOK && stale) {
    banner.hidden = false;
    banner.textContent = "The figures below stopped updating " + fmtAge(age) + " ago" +
      (lastError ? " (" + lastError + ")" : "") + ". Retrying every second.";
  } else if (!lastOK && lastError && !login.open) {
    banner.hidden = false;
    banner.textContent = "No data from veer yet: " + lastError + ".";
  } else {
    banner.hidden = true;
  }
}

// Keep ages and chart time axes moving even when polls fail.
setInterval(() => {
  renderConn();
  if (Date.now() - lastOK > POLL_MS * 1.5) for (const ui of routes.values()) ui.drawCharts();
  for (const td of $$(".revs td.when")) td.textContent = fmtAgo(Number(td.dataset.t));
}, 1000);

let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { for (const ui of routes.values()) ui.drawCharts(); }, 100);
});

// ---------------------------------------------------------------- events

const TYPE_LABEL = {"reload-failed": "reload failed", "backend-down": "backend down", "backend-up": "backend up"};

function addEvent(e, live) {
  const key = e.seq + "/" + e.time;
  if (seenEvents.has(key)) return false;
  seenEvents.add(key);
  e.t = Date.parse(e.time);
  events.push(e);
  if (events.length > MAX_EVENTS) {
    const old = events.shift();
    seenEvents.delete(old.seq + "/" + old.time);
  }
  const li = el("li", {class: "ev ev-" + e.type + (live ? " fresh" : ""), "data-type": e.type},
    el("time", {text: fmtClock(e.t), title: new Date(e.t).toLocaleString()}),
    el("span", {class: "ev-type", text: TYPE_LABEL[e.type] || e.type}),
    e.route ? el("span", {class: "ev-route", text: e.route}) : null,
    el("p", {class: "ev-msg", text: e.message}));
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  $("#no-events").hidden = true;
  return true;
}

let lastSeq = 0;
let streamCtl = null;
let streamBackoff = 1000;

function setStream(state, text) {
  $("#stream").className = "stream " + state;
  $("#stream-text").textContent = text;
}

async function startEvents() {
  try {
    const data = await api("GET", "/api/v1/events?limit=" + MAX_EVENTS);
    for (const e of data.events || []) {
      addEvent(e, false);
      lastSeq = Math.max(lastSeq, e.seq);
    }
  } catch (e) {
    // the stream below sends the kept events too
  }
  for (const ui of routes.values()) ui.drawCharts();
  stream();
}

function restartStream() {
  if (streamCtl) streamCtl.abort();
}

// stream reads the Server-Sent Events of /api/v1/events/stream with fetch()
// (for the Authorization header) and reconnects with Last-Event-ID.
async function stream() {
  for (;;) {
    streamCtl = new AbortController();
    const headers = authHeaders();
    headers.Accept = "text/event-stream";
    if (lastSeq) headers["Last-Event-ID"] = String(lastSeq);
    try {
      const resp = await fetch("/api/v1/events/stream", {headers, cache: "no-store", signal: streamCtl.signal});
      if (resp.status === 401) {
        setStream("down", "needs a token");
        await sleep(3000);
        continue;
      }
      if (!resp.ok || !resp.body) throw new Error(resp.status + " " + resp.statusText);
      setStream("live", "live");
      streamBackoff = 1000;
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i).replace(/^\r?\n\r?\n/, "");
          handleFrame(frame);
        }
      }
      throw new Error("the stream ended");
    } catch (e) {
      setStream("down", "reconnecting…");
      await sleep(streamBackoff);
      streamBackoff = Math.min(streamBackoff * 2, 10000);
    }
  }
}

function handleFrame(frame) {
  let data = "";
  let id = "";
  for (const line of frame.split(/\r?\n/)) {
    if (line.startsWith(":")) continue; // comment: heartbeat
    const c = line.indexOf(":");
    const field = c < 0 ? line : line.slice(0, c);
    const value = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
    if (field === "data") data += (data ? "\n" : "") + value;
    else if (field === "id") id = value;
  }
  if (!data) return;
  let e;
  try {
    e = JSON.parse(data);
  } catch (err) {
    return;
  }
  if (id) lastSeq = Number(id) || lastSeq;
  if (addEvent(e, true)) {
    const ui = routes.get(e.route);
    if (ui) {
      ui.drawCharts();
      poll(true); // an event usually means the route changed: show it now
    }
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------- start

updateTokenButton();
poll(true);
