// predq dashboard: reads the same JSON API as any client, with the viewer's key, every few
// seconds. No framework, no build step. Every value from the API enters the page as text
// (textContent), never as HTML. Two views, chosen by the address's fragment so a link can be
// shared: the board (#/ with the job list's filters, e.g. #/?status=failed&priority=bulk) and
// a job's page (#/jobs/<id>).
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

// --- where we are: #/ (the board, with the list's filters) or #/jobs/<id> -------------------

const FILTERS = ["status", "model", "priority", "id"];
const ID_PREFIX = /^[0-9a-fA-F-]{1,36}$/;

function route() {
  const hash = location.hash.slice(1);
  const job = hash.match(/^\/jobs\/([^/?#]+)$/);
  if (job) return { view: "job", id: decodeURIComponent(job[1]) };
  const query = hash.startsWith("/?") ? hash.slice(2) : "";
  return { view: "board", filters: new URLSearchParams(query) };
}

function showView(view) {
  $("login").hidden = true;
  $("change-key").hidden = false;
  $("nav").hidden = view === "board";
  $("board").hidden = view !== "board";
  $("job-page").hidden = view !== "job";
}

function jobLink(id) {
  return el("a", { href: "#/jobs/" + encodeURIComponent(id), className: "mono job-link",
                   title: id }, id);
}

// The board's filters live in the address, so a filtered list can be shared and reloaded.
function filtersFromAddress(filters) {
  $("job-status").value = filters.get("status") || "";
  $("job-priority").value = filters.get("priority") || "";
  $("job-search").value = filters.get("id") || "";
  const model = filters.get("model") || "";
  if (model && ![...$("job-model").options].some((o) => o.value === model)) {
    $("job-model").append(el("option", { value: model }, model)); // before the models load
  }
  $("job-model").value = model;
}

function filtersToAddress() {
  const params = new URLSearchParams();
  const values = { status: $("job-status").value, model: $("job-model").value,
                   priority: $("job-priority").value, id: $("job-search").value.trim() };
  for (const name of FILTERS) if (values[name]) params.set(name, values[name]);
  const query = params.toString();
  history.replaceState(null, "", location.pathname + location.search + "#/" +
                       (query ? "?" + query : ""));
  return values;
}

// --- HTTP ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, error) {
    super(`${status} ${error.code || ""}: ${error.message || ""}`);
    this.status = status;
    this.code = error.code;
  }
}

async function api(path, method) {
  const key = localStorage.getItem(KEY_STORE);
  if (!key) throw new Unauthorized("no key");
  const response = await fetch(path, { method: method || "GET",
                                       headers: { Authorization: "Bearer " + key } });
  if (response.status === 401) throw new Unauthorized("key refused");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.error || {});
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

function progressBar(job) {
  // The colour says how the job ended, the length how much of it got done: a failed job is
  // never a full green bar.
  const bar = el("div", { className: "bar bar-" + job.status,
                          title: `${job.rows_done} of ${job.rows_total} rows (${job.percent}%)` },
                 el("span"));
  bar.firstChild.style.width = job.percent + "%";
  return bar;
}

function renderJobs(body) {
  fill("jobs", body.jobs.map((job) => {
    const latency = job.finished_at
      ? Date.parse(job.finished_at) - Date.parse(job.created_at) : null;
    const row = el("tr", { className: "clickable" },
      el("td", {}, jobLink(job.id)),
      el("td", {}, `${job.model} ${job.version}`),
      el("td", {}, job.priority),
      el("td", { className: "num" }, job.rows),
      el("td", {}, status(job.status)),
      el("td", {}, progressBar(job)),
      el("td", { title: job.created_at }, ago(job.created_at)),
      el("td", { className: "num" }, millis(latency)));
    row.dataset.jobId = job.id;
    row.dataset.status = job.status;
    return row;
  }), 8, jobsFiltered() ? "no jobs match these filters"
                        : "no jobs yet: submit one with the curl line `make run` printed");
}

function jobsFiltered() {
  return ["job-status", "job-model", "job-priority", "job-search"].some((id) => $(id).value);
}

function renderModels(body) {
  fill("models", body.models.map((m) => el("tr", {},
    el("td", {}, m.name),
    el("td", {}, m.kind),
    el("td", {}, m.version),
    el("td", { className: "wrap" }, m.versions.join(", ")))), 4, "no models registered");
  const select = $("job-model");
  const chosen = select.value;
  const names = [...new Set([...body.models.map((m) => m.name), ...(chosen ? [chosen] : [])])];
  select.replaceChildren(el("option", { value: "" }, "any model"),
                         ...names.sort().map((name) => el("option", { value: name }, name)));
  select.value = chosen;
}

function renderFailures(body) {
  fill("failures", body.events.map((e) => {
    const row = el("tr", { className: "clickable" },
      el("td", { className: "mono id", title: `${e.type} ${e.id}` }, e.id),
      el("td", { className: "id" }, jobLink(e.job_id)),
      el("td", { className: "mono url", title: e.url }, e.url),
      el("td", {}, status(e.status)),
      el("td", { className: "num" }, e.attempts),
      el("td", { title: e.last_error || "" },
         el("div", { className: "clamp" }, e.last_error || "")));
    row.dataset.jobId = e.job_id;
    return row;
  }), 6, "none");
}

function rate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? Math.round(value).toLocaleString("en") : String(+value.toFixed(2));
}

function renderWorkers(body) {
  fill("worker-list", body.workers.map((w) => {
    const row = el("tr", { className: w.stale ? "stale" : "" },
      el("td", { className: "mono", title: `host ${w.host}, process ${w.pid}` }, w.name),
      el("td", { className: "mono" }, w.node),
      el("td", { className: "mono" }, w.queues.map((q) => q.replace(/^predict\./, ""))
                                              .join(", ")),
      el("td", { className: "num" }, w.concurrency),
      el("td", {}, el("span", { className: "status " + (w.stale ? "status-dead"
                                                                 : "status-succeeded") },
                     w.stale ? "stale" : "live")),
      el("td", { title: w.last_heartbeat }, seconds(w.heartbeat_age_seconds) + " ago"),
      el("td", { className: "num" }, rate(w.jobs_per_second)),
      el("td", { className: "num" }, rate(w.rows_per_second)),
      el("td", { className: "num" }, w.jobs_total.toLocaleString("en")),
      el("td", { className: "num" }, w.rows_total.toLocaleString("en")));
    row.dataset.worker = w.name;
    row.dataset.stale = String(w.stale);
    return row;
  }), 10, "no worker has sent a heartbeat in the last ten minutes: start one (predq worker)");
}

function renderRates(body) {
  $("jobs-rate").textContent = rate(body.jobs_per_second);
  $("rows-rate").textContent = rate(body.rows_per_second);
}

// --- plots (inline SVG) ----------------------------------------------------------------------

const W = 360, H = 180, LEFT = 44, RIGHT = 8, TOP = 10, BOTTOM = 22;

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A scale whose grid lines fall on round values: a step of 1, 2 or 5 times a power of ten,
// and as many steps (at most four) as the largest value needs. Labels name those values
// exactly, in units that suit them.
function scale(max, whole) {
  let step = 1;
  if (max > 0) {
    const raw = max / 4, power = 10 ** Math.floor(Math.log10(raw));
    step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw * (1 - 1e-9));
  }
  if (whole) step = Math.max(1, Math.round(step));
  const steps = Math.max(1, Math.ceil(max / step - 1e-9));
  return { step, top: steps * step, steps };
}

function decimals(step) {
  return Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
}

function msLabel(top, step) {
  if (top >= 2000) return (v) => (v / 1000).toFixed(decimals(step / 1000)) + " s";
  return (v) => v.toFixed(decimals(step)) + " ms";
}

function axes(plot, minutes, { step, top, steps }, format) {
  const nodes = [];
  for (let i = 0; i <= steps; i++) {
    const value = step * i;
    const y = TOP + (H - TOP - BOTTOM) * (1 - value / top);
    nodes.push(svg("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "grid" }));
    nodes.push(svg("text", { x: LEFT - 4, y: y + 3, "text-anchor": "end", class: "axis y-label",
                             "data-value": value }, format(value)));
  }
  const width = (W - LEFT - RIGHT) / minutes.length;
  for (const i of [0, Math.floor(minutes.length / 2), minutes.length - 1]) {
    const label = new Date(minutes[i].minute).toTimeString().slice(0, 5);
    nodes.push(svg("text", { x: LEFT + width * (i + 0.5), y: H - 6, "text-anchor": "middle",
                             class: "axis" }, label));
  }
  plot.replaceChildren(...nodes);
  return { step: width, y: (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top) };
}

function renderThroughput(minutes) {
  const plot = $("throughput");
  const { step, y } = axes(plot, minutes, scale(Math.max(...minutes.map((m) => m.finished)), true),
                           String);
  minutes.forEach((m, i) => {
    const x = LEFT + step * i + step * 0.15, width = step * 0.7;
    const title = svg("title", {}, `${m.minute}: ${m.succeeded} succeeded, ${m.failed} failed, ` +
                                   `${m.rows} rows`);
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
  const range = scale(Math.max(0, ...known.map((m) => m.p99_ms)), false);
  const { step, y } = axes(plot, minutes, range, msLabel(range.top, range.step));
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
      const dot = svg("circle", { cx: x, cy: y(m[field]), r: 2.5, class: "dot" + cls.slice(1),
                                  "data-value": m[field] });
      dot.append(svg("title", {}, `${m.minute}: ${cls} ${millis(m[field])}`));
      plot.append(dot);
    });
    if (d) plot.append(svg("path", { d, class: cls }));
  }
}

// --- a job's page ----------------------------------------------------------------------------

function fact(label, value) {
  return [el("dt", {}, label), el("dd", {}, value)];
}

function when(iso, since) {
  if (!iso) return "–";
  const time = new Date(iso).toLocaleTimeString();
  if (!since) return time;
  return `${time} (+${millis(Date.parse(iso) - Date.parse(since))})`;
}

function renderJobPage(body) {
  const { job, timeline, chunks, preview, deliveries, actions } = body;
  $("job-missing").hidden = true;
  $("job-id").textContent = job.id;
  $("job-status-pill").replaceChildren(status(job.status));
  $("job-page").dataset.status = job.status;
  $("job-cancel").hidden = !actions.cancel;
  $("job-redeliver").hidden = !actions.redeliver;
  $("job-facts").replaceChildren(
    ...fact("model", `${job.model} ${job.version}`),
    ...fact("priority", job.priority),
    ...fact("rows", `${job.rows_done} of ${job.rows_total} done`),
    ...fact("progress", progressBar(job)),
    ...fact("attempts", job.attempts),
    ...fact("from cache", job.from_cache ? "yes" : "no"),
    ...fact("deadline", job.deadline ? new Date(job.deadline).toLocaleString() : "none"));
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error || "";
  const created = job.created_at;
  $("job-timeline").replaceChildren(...timeline.map((t) => {
    let label = t.step;
    if (t.step === "started" && job.attempts > 1) label += ` (attempt ${job.attempts})`;
    if (t.step === "finished" && t.at) label = job.status;
    const item = el("li", { className: t.at ? "reached" : "pending" },
                    el("span", { className: "step" }, label),
                    el("span", { className: "at" },
                       t.at ? when(t.at, t.step === "created" ? null : created) : "not yet"));
    item.dataset.step = t.step;
    return item;
  }));
  $("job-chunks").hidden = !chunks;
  if (chunks) {
    $("job-chunks").textContent = `${chunks.total} chunks: ${chunks.done} done, ` +
      `${chunks.running} running, ${chunks.pending} pending; ${chunks.attempts} attempts`;
  }
  renderPreview(job, preview);
  renderDeliveries(deliveries);
}

function renderPreview(job, preview) {
  if (!preview) {
    $("job-preview-note").textContent = "";
    fill("job-preview", [], 3, job.status === "failed" || job.status === "cancelled" ||
         job.status === "expired" ? `no result: the job ${job.status}` : "not finished yet");
    return;
  }
  const labels = preview.labels;
  $("job-preview-note").textContent =
    `first ${preview.predictions.length} of ${preview.rows} rows`;
  fill("job-preview", preview.predictions.map((p, i) => {
    const probabilities = preview.probabilities
      ? preview.probabilities[i].map((v, k) => `${labels ? labels[k] : k}: ${v.toFixed(3)}`)
          .join(", ")
      : "";
    return el("tr", {}, el("td", { className: "num" }, i),
              el("td", { className: "mono" }, typeof p === "number" ? +p.toFixed(6) : p),
              el("td", { className: "mono wrap" }, probabilities));
  }), 3, "empty result");
}

function renderDeliveries(events) {
  fill("job-deliveries", events.map((e) => {
    const tries = e.attempts.length ? el("ol", { className: "attempts" }, ...e.attempts.map(
      (a) => el("li", {}, new Date(a.at).toLocaleTimeString() + " ",
                a.status_code ? el("span", { className: "code code-" + String(a.status_code)[0] },
                                   a.status_code) : "no answer",
                a.latency_ms !== null ? ` in ${millis(a.latency_ms)}` : "",
                a.error ? " – " + a.error : "")))
      : "not tried yet";
    const row = el("tr", {},
      el("td", { className: "mono id", title: e.id }, e.id),
      el("td", {}, e.type),
      el("td", { className: "mono url", title: e.url }, e.url),
      el("td", {}, status(e.status), e.next_attempt_at
        ? " next at " + new Date(e.next_attempt_at).toLocaleTimeString() : ""),
      el("td", { className: "wrap" }, tries));
    row.dataset.eventId = e.id;
    return row;
  }), 5, "no webhook events for this job");
}

async function act(action) {
  const id = route().id;
  const path = action === "cancel" ? `/v1/jobs/${encodeURIComponent(id)}/cancel`
                                   : `/v1/jobs/${encodeURIComponent(id)}/deliveries/redeliver`;
  const button = $(action === "cancel" ? "job-cancel" : "job-redeliver");
  button.disabled = true;
  try {
    const body = await api(path, "POST");
    $("job-message").textContent = action === "cancel" ? `cancelled: the job is ${body.status}`
      : `${body.events.length} event${body.events.length === 1 ? "" : "s"} sent again`;
    $("job-message").className = "note";
  } catch (error) {
    if (error instanceof Unauthorized) { refresh(); return; }
    $("job-message").textContent = `${action} refused: ${error.message}`;
    $("job-message").className = "note error-note";
  } finally {
    button.disabled = false;
  }
  refresh();
}

// --- the refresh loop ------------------------------------------------------------------------

async function section(sectionId, load, render) {
  const mine = generation;
  let body;
  try {
    body = await load();
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    if (mine === generation) sectionError(sectionId, error); // shown, retried next round
    return;
  }
  // An answer that comes back after a newer round started (a filter changed meanwhile) is
  // dropped: drawn, it would list the old filter's jobs under the new one.
  if (mine !== generation) return;
  try {
    render(body);
    sectionError(sectionId, null);
  } catch (error) {
    console.error(error); // a bug in this page: loud, but the other sections go on
    sectionError(sectionId, error);
  }
}

let generation = 0;

function boardSections() {
  const values = filtersToAddress();
  const search = values.id;
  const searchable = !search || ID_PREFIX.test(search);
  $("job-search-note").textContent = searchable ? "" : "ids hold hex digits and dashes only";
  const params = new URLSearchParams({ limit: "25" });
  for (const name of FILTERS) if (values[name]) params.set(name, values[name]);
  return [
    section("queues-section", readyz, renderHealth),
    searchable ? section("jobs-section", () => api("/v1/jobs?" + params), renderJobs)
               : Promise.resolve(fill("jobs", [], 8, "no job id looks like that")),
    section("throughput-section", () => api("/v1/stats?minutes=15"), (body) => {
      renderRates(body);
      renderThroughput(body.minutes);
      renderLatency(body.minutes);
    }),
    section("workers-section", () => api("/v1/workers"), renderWorkers),
    section("models-section", () => api("/v1/models"), renderModels),
    section("failures-section", () => api("/v1/webhooks/failures?limit=20"), renderFailures),
  ];
}

async function loadJobPage(id) {
  try {
    return await api(`/v1/jobs/${encodeURIComponent(id)}/overview`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

function jobSections(id) {
  return [
    section("queues-section", readyz, renderHealth), // the header's figures
    section("job-head", () => loadJobPage(id), (body) => {
      if (body === null) {
        $("job-missing").hidden = false;
        $("job-id").textContent = id;
        $("job-page").dataset.status = "missing";
        for (const button of ["job-cancel", "job-redeliver"]) $(button).hidden = true;
        return;
      }
      renderJobPage(body);
    }),
  ];
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation; // a refresh started meanwhile (filter change) owns the timer
  const where = route();
  try {
    await Promise.all(where.view === "job" ? jobSections(where.id) : boardSections());
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
  const where = route();
  if (where.view === "board") filtersFromAddress(where.filters);
  else if ($("job-id").textContent !== where.id) clearJobPage();
  showView(where.view);
  refresh();
}

function clearJobPage() {
  // Nothing of the previous job stays on screen while the next one loads.
  for (const id of ["job-id", "job-message", "job-preview-note", "job-chunks"]) {
    $(id).textContent = "";
  }
  for (const id of ["job-facts", "job-timeline", "job-status-pill"]) $(id).replaceChildren();
  for (const id of ["job-preview", "job-deliveries"]) $(id).tBodies[0].replaceChildren();
  for (const id of ["job-cancel", "job-redeliver", "job-error", "job-missing"]) {
    $(id).hidden = true;
  }
  delete $("job-page").dataset.status;
}

let typing = null;

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
for (const id of ["job-status", "job-model", "job-priority"]) {
  $(id).addEventListener("change", refresh);
}
$("job-search").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(refresh, 250); // one request when the typing pauses, not one per key
});
for (const id of ["jobs", "failures"]) {
  // A click anywhere on a job's row opens its page (the id itself is a link too).
  $(id).tBodies[0].addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-job-id]");
    if (row && !event.target.closest("a")) location.hash = "#/jobs/" +
      encodeURIComponent(row.dataset.jobId);
  });
}
$("job-cancel").addEventListener("click", () => act("cancel"));
$("job-redeliver").addEventListener("click", () => act("redeliver"));
window.addEventListener("hashchange", () => { takeKeyFromFragment(); start(); });

takeKeyFromFragment();
start();
