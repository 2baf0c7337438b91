// predq dashboard: reads the same JSON API as any client, with the viewer's key, every few
// seconds. No framework, no build step. Every value from the API enters the page as text
// (textContent), never as HTML.
"use strict";

const REFRESH_MS = 3000;
const KEY_STORE = "predq.key";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let timer = null;

class Unauthorized extends Error {}

// --- the key: from #key=... (once), else local storage, else the prompt ---------------------

function takeKeyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (key) {
    localStorage.setItem(KEY_STORE, key.trim());
    history.replaceState(null, "", location.pathname + location.search); // off the address bar
  }
}

function showLogin(message, isError) {
  clearTimeout(timer);
  $("board").hidden = true;
  $("change-key").hidden = true;
  $("login").hidden = false;
  if (message) {
    $("login-message").textContent = message;
    $("login-message").className = isError ? "error" : "";
  }
  $("key").focus();
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("change-key").hidden = false;
}

// --- HTTP ------------------------------------------------------------------------------------

async function api(path) {
  const key = localStorage.getItem(KEY_STORE);
  if (!key) throw new Unauthorized("no key");
  const response = await fetch(path, { headers: { Authorization: "Bearer " + key } });
  if (response.status === 401) throw new Unauthorized("key refused");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new Error(`${response.status} ${error.code || ""}: ${error.message || ""}`);
  }
  return body;
}

async function readyz() {
  // Unauthenticated; answers 503 with the failing check when a store is down.
  const response = await fetch("/readyz");
  return response.json();
}

// --- DOM helpers -----------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ""));
  }
  return node;
}

function fill(tableId, rows, columns, emptyText) {
  const body = $(tableId).tBodies[0];
  if (!rows.length) {
    body.replaceChildren(el("tr", {}, el("td", { className: "empty", colSpan: columns },
                                           emptyText)));
    return;
  }
  body.replaceChildren(...rows);
}

function status(value) {
  return el("span", { className: "status status-" + value }, value);
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return value.toFixed(value < 10 ? 1 : 0) + " s";
  if (value < 3600) return Math.floor(value / 60) + " min " + Math.round(value % 60) + " s";
  return (value / 3600).toFixed(1) + " h";
}

function ago(iso) {
  if (!iso) return "–";
  return seconds(Math.max(0, (Date.now() - Date.parse(iso)) / 1000)) + " ago";
}

function millis(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
}

function sectionError(sectionId, error) {
  const section = $(sectionId);
  let note = section.querySelector(".error-note");
  if (!error) {
    if (note) note.remove();
    return;
  }
  if (!note) {
    note = el("p", { className: "note error-note" });
    section.append(note);
  }
  note.textContent = "could not load: " + error.message;
}

// --- sections --------------------------------------------------------------------------------

function renderHealth(health) {
  const ready = health.status === "ready";
  $("ready").textContent = ready ? "ready" : "unavailable";
  $("ready").className = "pill " + (ready ? "ready" : "down");
  $("workers").textContent = ready ? `${health.workers} worker${health.workers === 1 ? "" : "s"}`
                                   : "";
  const queues = Object.entries(health.queues || {});
  fill("queues", queues.map(([name, q]) => el("tr", {},
    el("td", { className: "mono" }, name.replace(/^predict\./, "")),
    el("td", { className: "num" }, q.depth),
    el("td", { className: "num" }, seconds(q.oldest_age_seconds)),
    el("td", { className: "num" }, q.drain_per_second))), 4, "no queue figures");
  const checks = Object.entries(health.checks || {}).filter(([, v]) => v !== "ok");
  $("queues-note").textContent = checks.map(([k, v]) => `${k}: ${v}`).join("; ");
}

function renderJobs(body) {
  fill("jobs", body.jobs.map((job) => {
    const done = job.percent >= 100;
    const bar = el("div", { className: "bar" + (done ? " done" : ""),
                            title: `${job.rows_done} of ${job.rows_total} rows (${job.percent}%)` },
                   el("span"));
    bar.firstChild.style.width = job.percent + "%";
    const latency = job.finished_at
      ? Date.parse(job.finished_at) - Date.parse(job.created_at) : null;
    const row = el("tr", {},
      el("td", { className: "mono", title: job.id }, job.id),
      el("td", {}, `${job.model} ${job.version}`),
      el("td", {}, job.priority),
      el("td", { className: "num" }, job.rows),
      el("td", {}, status(job.status)),
      el("td", {}, bar),
      el("td", { title: job.created_at }, ago(job.created_at)),
      el("td", { className: "num" }, millis(latency)));
    row.dataset.jobId = job.id;
    row.dataset.status = job.status;
    return row;
  }), 8, "no jobs yet: submit one with the curl line `make run` printed");
}

function renderModels(body) {
  fill("models", body.models.map((m) => el("tr", {},
    el("td", {}, m.name),
    el("td", {}, m.kind),
    el("td", {}, m.version),
    el("td", { className: "wrap" }, m.versions.join(", ")))), 4, "no models registered");
}

function renderFailures(body) {
  fill("failures", body.events.map((e) => el("tr", {},
    el("td", { className: "mono id", title: `${e.type} ${e.id}` }, e.id),
    el("td", { className: "mono id", title: e.job_id }, e.job_id),
    el("td", { className: "mono url", title: e.url }, e.url),
    el("td", {}, status(e.status)),
    el("td", { className: "num" }, e.attempts),
    el("td", { className: "wrap" }, e.last_error || ""))), 6, "none");
}

// --- plots (inline SVG) ----------------------------------------------------------------------

const W = 360, H = 180, LEFT = 44, RIGHT = 8, TOP = 10, BOTTOM = 22;

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function axes(plot, minutes, top, format) {
  const nodes = [];
  for (let i = 0; i <= 4; i++) {
    const y = TOP + (H - TOP - BOTTOM) * (1 - i / 4);
    nodes.push(svg("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "grid" }));
    nodes.push(svg("text", { x: LEFT - 4, y: y + 3, "text-anchor": "end", class: "axis" },
                   format((top * i) / 4)));
  }
  const step = (W - LEFT - RIGHT) / minutes.length;
  for (const i of [0, Math.floor(minutes.length / 2), minutes.length - 1]) {
    const label = new Date(minutes[i].minute).toTimeString().slice(0, 5);
    nodes.push(svg("text", { x: LEFT + step * (i + 0.5), y: H - 6, "text-anchor": "middle",
                             class: "axis" }, label));
  }
  plot.replaceChildren(...nodes);
  return { step, y: (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top) };
}

function renderThroughput(minutes) {
  const plot = $("throughput");
  // Four grid steps of a whole number of jobs each.
  const tick = Math.max(1, Math.ceil(niceMax(Math.max(...minutes.map((m) => m.finished)) / 4)));
  const { step, y } = axes(plot, minutes, 4 * tick, String);
  minutes.forEach((m, i) => {
    const x = LEFT + step * i + step * 0.15, width = step * 0.7;
    const title = svg("title", {}, `${m.minute}: ${m.succeeded} succeeded, ${m.failed} failed`);
    const ok = svg("rect", { x, width, y: y(m.succeeded), height: y(0) - y(m.succeeded),
                             class: "ok" });
    const bad = svg("rect", { x, width, y: y(m.finished), height: y(m.succeeded) - y(m.finished),
                              class: "bad" });
    const group = svg("g", {});
    group.append(title, ok, bad);
    plot.append(group);
  });
}

function renderLatency(minutes) {
  const plot = $("latency");
  const known = minutes.filter((m) => m.p99_ms !== null);
  const top = niceMax(Math.max(0, ...known.map((m) => m.p99_ms)));
  const { step, y } = axes(plot, minutes, top, (v) => millis(v).replace(" ", ""));
  if (!known.length) {
    plot.append(svg("text", { x: (W + LEFT) / 2, y: H / 2, "text-anchor": "middle",
                              class: "nodata" }, "no finished jobs in this window"));
    return;
  }
  for (const [field, cls] of [["p99_ms", "p99"], ["p50_ms", "p50"]]) { // the median on top
    // A minute with no finished job breaks the line instead of pretending it was zero.
    let d = "", pen = "M";
    minutes.forEach((m, i) => {
      if (m[field] === null) { pen = "M"; return; }
      const x = LEFT + step * (i + 0.5);
      d += `${pen}${x.toFixed(1)},${y(m[field]).toFixed(1)} `;
      pen = "L";
      plot.append(svg("circle", { cx: x, cy: y(m[field]), r: 2.5, class: "dot" + cls.slice(1) },
                      undefined));
    });
    if (d) plot.append(svg("path", { d, class: cls }));
  }
}

// --- the refresh loop ------------------------------------------------------------------------

async function section(sectionId, load, render) {
  let body;
  try {
    body = await load();
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    sectionError(sectionId, error); // the API or the network: shown, retried next round
    return;
  }
  try {
    render(body);
    sectionError(sectionId, null);
  } catch (error) {
    console.error(error); // a bug in this page: loud, but the other sections go on
    sectionError(sectionId, error);
  }
}

let generation = 0;

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation; // a refresh started meanwhile (filter change) owns the timer
  const filter = $("job-status").value;
  const jobsPath = "/v1/jobs?limit=25" + (filter ? "&status=" + filter : "");
  try {
    await Promise.all([
      section("queues-section", readyz, renderHealth),
      section("jobs-section", () => api(jobsPath), renderJobs),
      section("throughput-section", () => api("/v1/stats?minutes=15"), (body) => {
        renderThroughput(body.minutes);
        renderLatency(body.minutes);
      }),
      section("models-section", () => api("/v1/models"), renderModels),
      section("failures-section", () => api("/v1/webhooks/failures?limit=20"), renderFailures),
    ]);
  } catch (error) {
    if (error instanceof Unauthorized) {
      if (mine !== generation) return; // a key pasted since then is being tried
      localStorage.removeItem(KEY_STORE);
      showLogin("That key was refused (revoked, or from another installation). Paste another.",
                true);
      return;
    }
    throw error;
  }
  if (mine !== generation) return;
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  timer = setTimeout(refresh, REFRESH_MS);
}

function start() {
  if (!localStorage.getItem(KEY_STORE)) {
    showLogin();
    return;
  }
  showBoard();
  refresh();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  localStorage.setItem(KEY_STORE, key);
  $("key").value = "";
  start();
});
$("change-key").addEventListener("click", () => {
  localStorage.removeItem(KEY_STORE);
  showLogin();
});
$("job-status").addEventListener("change", refresh);
window.addEventListener("hashchange", () => { takeKeyFromFragment(); start(); });

takeKeyFromFragment();
start();
