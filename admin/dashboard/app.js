// veer placeholder dashboard: lists the routes from /api/v1/routes.
// Plain JS, no framework, no CDN. The token (when the API needs one) is kept
// in this tab's sessionStorage only.
"use strict";

const body = document.querySelector("#routes tbody");
const status = document.getElementById("status");
const login = document.getElementById("login");

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function render(routes) {
  body.replaceChildren();
  for (const r of routes) {
    const order = r.version_order || Object.keys(r.versions).sort();
    order.forEach((name, i) => {
      const v = r.versions[name] || {backends: []};
      const tr = document.createElement("tr");
      if (i === 0) tr.className = "first";
      const up = v.backends.filter((b) => b.healthy).length;
      cell(tr, i === 0 ? r.name : "");
      cell(tr, name + (name === r.stable ? " (stable)" : ""));
      cell(tr, (r.weights[name] || 0) + "%", "num");
      cell(tr, String(v.requests || 0), "num");
      cell(tr, v.requests ? v.error_rate + "%" : "-", "num" + (v.error_rate > 0 ? " bad" : ""));
      cell(tr, v.requests ? v.p99_ms + " ms" : "-", "num");
      cell(tr, up + "/" + v.backends.length, up < v.backends.length ? "bad" : "");
      cell(tr, i === 0 ? r.phase : "");
      cell(tr, i === 0 ? String(r.revision) : "", "num");
      body.appendChild(tr);
    });
  }
}

async function refresh() {
  const headers = {};
  const token = sessionStorage.getItem("veer-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  try {
    const resp = await fetch("/api/v1/routes", {headers});
    if (resp.status === 401) {
      login.hidden = false;
      status.textContent = "the admin API needs a token";
      return;
    }
    const data = await resp.json();
    if (!resp.ok) {
      status.textContent = data.error || resp.statusText;
      return;
    }
    login.hidden = true;
    render(data.routes);
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "cannot reach veer: " + e;
  }
}

login.addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("veer-token", document.getElementById("token").value);
  refresh();
});

refresh();
setInterval(refresh, 2000);
