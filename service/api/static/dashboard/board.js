// The board (#/ and the job list's filters, e.g. #/?status=failed&priority=bulk&range=1h): the
// queues now and over time, throughput, latency, the workers, the job list a page at a time,
// the models (with the comparison of each rollout's versions, for an operator's key) and the
// failing webhooks.

import {
  $, ApiError, KEY_STORE, api, count, el, fill, jobLink, millis, progressBar, rate, readyz,
  seconds, section, status, when,
} from "./core.js";
import { MEASURES, renderLatency, renderQueues, renderThroughput } from "./plots.js";

const FILTERS = ["status", "model", "priority", "id", "range", "sort"];
const CONTROLS = { status: "job-status", model: "job-model", priority: "job-priority",
                   id: "job-search", range: "job-range", sort: "job-sort" };
const RANGES = { "15m": 15 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const ID_PREFIX = /^[0-9a-fA-F-]{1,36}$/;
const PAGE = 25;

// The list's pages: the cursor each one starts at (the first: none). A change of filter
// starts again at the first page.
const pages = { cursors: [null], index: 0, next: null, filters: "" };

export function filtersFromAddress(filters) {
  for (const name of FILTERS) $(CONTROLS[name]).value = filters.get(name) || "";
  const model = filters.get("model") || "";
  if (model && ![...$("job-model").options].some((o) => o.value === model)) {
    $("job-model").append(el("option", { value: model }, model)); // before the models load
    $("job-model").value = model;
  }
  if (!RANGES[$("job-range").value]) $("job-range").value = "";
  if ($("job-sort").value !== "oldest") $("job-sort").value = "";
}

function filtersToAddress() {
  const params = new URLSearchParams();
  const values = {};
  for (const name of FILTERS) {
    values[name] = $(CONTROLS[name]).value.trim();
    if (values[name]) params.set(name, values[name]);
  }
  const query = params.toString();
  history.replaceState(null, "", location.pathname + location.search + "#/" +
                       (query ? "?" + query : ""));
  if (query !== pages.filters) Object.assign(pages, { cursors: [null], index: 0, filters: query });
  return values;
}

export function turnPage(step) {
  const index = pages.index + step;
  if (index < 0 || (step > 0 && !pages.next)) return false;
  if (step > 0) pages.cursors[index] = pages.next;
  pages.index = index;
  return true;
}

function listQuery(values) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  for (const name of ["status", "model", "priority", "id"]) {
    if (values[name]) params.set(name, values[name]);
  }
  if (values.sort === "oldest") params.set("sort", "oldest");
  if (RANGES[values.range]) {
    params.set("since", new Date(Date.now() - RANGES[values.range] * 1000).toISOString());
  }
  const cursor = pages.cursors[pages.index];
  if (cursor) params.set("cursor", cursor);
  return params;
}

export function renderHealth(health) {
  const ready = health.status === "ready";
  $("ready").textContent = ready ? "ready" : "unavailable";
  $("ready").className = "pill " + (ready ? "ready" : "down");
  $("workers").textContent = ready
    ? `${health.workers} predicting worker${health.workers === 1 ? "" : "s"}` : "";
  const queues = Object.entries(health.queues || {});
  if ($("queues")) {
    fill("queues", queues.map(([name, q]) => el("tr", {},
      el("td", { className: "mono" }, name.replace(/^predict\./, "")),
      el("td", { className: "num" }, count(q.depth)),
      el("td", { className: "num" }, seconds(q.oldest_age_seconds)),
      el("td", { className: "num" }, q.drain_per_second))), 4, "no queue figures");
  }
  const checks = Object.entries(health.checks || {}).filter(([, v]) => v !== "ok");
  $("queues-note").textContent = checks.map(([k, v]) => `${k}: ${v}`).join("; ");
}

function renderJobs(body) {
  pages.next = body.next;
  fill("jobs", body.jobs.map((job) => {
    const latency = job.finished_at
      ? Date.parse(job.finished_at) - Date.parse(job.created_at) : null;
    const row = el("tr", { className: "clickable" },
      el("td", {}, jobLink(job.id)),
      el("td", {}, `${job.model} ${job.version}`),
      el("td", {}, job.priority),
      el("td", { className: "num" }, count(job.rows)),
      el("td", {}, status(job.status)),
      el("td", {}, progressBar(job)),
      el("td", {}, when(job.created_at)),
      el("td", { className: "num" }, millis(latency)));
    row.dataset.jobId = job.id;
    row.dataset.status = job.status;
    return row;
  }), 8, jobsFiltered() ? "no jobs match these filters"
                        : "no jobs yet: submit one with the curl line `make run` printed");
  $("jobs-prev").disabled = pages.index === 0;
  $("jobs-next").disabled = !body.next;
  $("jobs-page").textContent = `page ${pages.index + 1}`;
}

function jobsFiltered() {
  return ["status", "model", "priority", "id", "range"].some((n) => $(CONTROLS[n]).value);
}

/** A model's rollout as its versions' shares ("1 95%, 2 5%, shadow 2 at 100%"), or "latest". */
function rolloutText(rollout) {
  if (!rollout) return "latest";
  const shares = Object.entries(rollout.shares)
    .map(([version, share]) => `${version} ${Math.round(share * 1000) / 10}%`).join(", ");
  return rollout.shadow ? `${shares}; shadow ${rollout.shadow.version} at ${rollout.shadow.percent}%`
                        : shares;
}

// --- the comparison of each model's rollout (operator keys only: compare answers 403 to others)

const CONFUSION_LABELS = 5; // a confusion table is drawn up to 5 × 5 labels
// A comparison reads up to 10 000 shadowed jobs: asked again every 15 s, not every refresh.
const COMPARE_EVERY_MS = 15_000;
const compared = { key: null, answers: new Map() }; // "model baseline candidate" → {at, answer}
let refusedKey = null; // the key compare refused: not asked again until the key changes

/** Baseline and candidate of a rollout: its first weighted version against the shadow, else
 * against its second weighted version; null when it runs one version alone. */
function rolloutPair(rollout) {
  if (!rollout) return null;
  const weighted = Object.entries(rollout.shares).filter(([, share]) => share > 0)
    .map(([version]) => version);
  if (!weighted.length) return null;
  const baseline = weighted[0];
  const shadow = rollout.shadow && rollout.shadow.version !== baseline
    ? rollout.shadow.version : null;
  const candidate = shadow || weighted.find((version) => version !== baseline);
  return candidate ? { baseline, candidate } : null;
}

async function loadComparisons(models) {
  const pairs = models.map((m) => ({ model: m.name, pair: rolloutPair(m.rollout) }))
    .filter((c) => c.pair);
  const key = localStorage.getItem(KEY_STORE);
  if (!pairs.length || key === refusedKey) return { pairs: [], refused: !!pairs.length };
  if (compared.key !== key) Object.assign(compared, { key, answers: new Map() });
  const answers = await Promise.all(pairs.map(async (c) => {
    const id = `${c.model} ${c.pair.baseline} ${c.pair.candidate}`;
    const kept = compared.answers.get(id);
    if (kept && Date.now() - kept.at < COMPARE_EVERY_MS) return kept.answer;
    const query = new URLSearchParams(c.pair);
    let answer;
    try {
      answer = { ...c, report: await api(`/v1/models/${encodeURIComponent(c.model)}/compare?` +
                                          query) };
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      answer = { ...c, error };
    }
    compared.answers.set(id, { at: Date.now(), answer });
    return answer;
  }));
  if (answers.some((c) => c.error && c.error.status === 403)) {
    refusedKey = key;
    return { pairs: [], refused: true };
  }
  return { pairs: answers, refused: false };
}

function percent(value) {
  return value === null || value === undefined ? "–" : (value * 100).toFixed(1) + "%";
}

function number(value) {
  return value === null || value === undefined ? "–" : String(+value.toPrecision(4));
}

function comparisonSummary(report) {
  const text = `${count(report.rows)} rows of ${count(report.jobs)} jobs both answered; ` +
    "agreement ";
  const agreement = el("b", { className: "agreement" }, percent(report.agreement));
  agreement.dataset.value = String(report.agreement);
  const line = el("p", { className: "compare-summary" }, text, agreement);
  if (report.kind === "regressor") {
    line.append(`; mean abs diff ${number(report.mean_abs_diff)}, max ` +
                number(report.max_abs_diff));
  }
  return line;
}

function versionsTable(report) {
  const row = (version, role) => {
    const v = report.versions[version] || {};
    const latency = v.latency_ms || {};
    return el("tr", {}, el("td", {}, version), el("td", {}, role),
      el("td", { className: "num" }, count(v.answered)),
      el("td", { className: "num" }, count(v.failures)),
      el("td", { className: "num" }, millis(latency.p50)),
      el("td", { className: "num" }, millis(latency.p99)));
  };
  return el("table", { className: "compare-versions" },
    el("thead", {}, el("tr", {}, ...["version", "", "answered", "failures", "p50", "p99"]
      .map((h, i) => el("th", { className: i > 1 ? "num" : "" }, h)))),
    el("tbody", {}, row(report.baseline, "baseline"), row(report.candidate, "candidate")));
}

function confusionTable(confusion) {
  const rows = Object.keys(confusion).sort();
  const columns = [...new Set(rows.flatMap((b) => Object.keys(confusion[b])))].sort();
  if (!rows.length || rows.length > CONFUSION_LABELS || columns.length > CONFUSION_LABELS) {
    return null;
  }
  return el("table", { className: "confusion", title: "rows by baseline label (down), " +
                                                      "then candidate label (across)" },
    el("thead", {}, el("tr", {}, el("th", {}, "baseline ↓ candidate →"),
                      ...columns.map((c) => el("th", { className: "num" }, c)))),
    el("tbody", {}, ...rows.map((b) => el("tr", {}, el("th", {}, b),
      ...columns.map((c) => el("td", { className: b === c ? "num same" : "num" },
                               count(confusion[b][c] || 0)))))));
}

function comparisonBlock(c) {
  const block = el("div", { className: "comparison" },
    el("h3", {}, `${c.model}: ${c.pair.candidate} against ${c.pair.baseline}`));
  block.dataset.model = c.model;
  if (c.error) {
    block.append(el("p", { className: "note error-note" }, "could not compare: " +
                    c.error.message));
    return block;
  }
  const report = c.report;
  block.append(comparisonSummary(report), versionsTable(report));
  const confusion = report.confusion && confusionTable(report.confusion);
  if (confusion) block.append(confusion);
  if (!report.jobs) {
    block.append(el("p", { className: "note" },
                    "no shadowed job both versions answered yet: set a shadow to compare"));
  }
  return block;
}

function renderComparisons(found) {
  const blocks = found.pairs.map(comparisonBlock);
  if (found.refused) {
    blocks.push(el("p", { className: "note" }, "comparing a rollout's versions needs a key " +
                                               "with the operator scope"));
  }
  $("comparisons").replaceChildren(...blocks);
  // Across the page while it compares: the tables need the room.
  $("models-section").classList.toggle("wide", found.pairs.length > 0);
}

async function loadModels() {
  const body = await api("/v1/models");
  body.comparisons = await loadComparisons(body.models);
  return body;
}

function renderModels(body) {
  fill("models", body.models.map((m) => el("tr", {},
    el("td", {}, m.name),
    el("td", {}, m.kind),
    el("td", {}, m.version),
    el("td", { className: "wrap" }, m.versions.join(", ")),
    el("td", { className: "wrap" }, rolloutText(m.rollout)))), 5, "no models registered");
  const select = $("job-model");
  const chosen = select.value;
  const names = [...new Set([...body.models.map((m) => m.name), ...(chosen ? [chosen] : [])])];
  select.replaceChildren(el("option", { value: "" }, "any model"),
                         ...names.sort().map((name) => el("option", { value: name }, name)));
  select.value = chosen;
  renderComparisons(body.comparisons);
}

function renderFailures(body) {
  fill("failures", body.groups.map((g) => {
    const row = el("tr", { className: "clickable" },
      el("td", { className: "mono url", title: g.url }, g.url),
      el("td", {}, status(g.status)),
      el("td", { className: "num" }, count(g.events)),
      el("td", { title: g.last_error || "" },
         el("div", { className: "clamp" }, g.last_error || "")),
      el("td", {}, when(g.last_at)),
      el("td", { className: "id" }, jobLink(g.job_id)));
    row.dataset.jobId = g.job_id;
    row.dataset.events = String(g.events);
    return row;
  }), 6, "none");
}

export function workerRow(w) {
  const busy = w.processes.filter((p) => p.busy).length;
  const pool = w.processes.filter((p) => p.role === "pool").length;
  const row = el("tr", { className: w.stale ? "stale" : "" },
    el("td", { className: "mono", title: `host ${w.host}, process ${w.pid}` },
       el("a", { href: "#/workers" }, w.name)),
    el("td", {}, w.role),
    el("td", { className: "mono" }, w.queues.map((q) => q.replace(/^predict\./, "")).join(", ")),
    el("td", { className: "num" }, w.concurrency),
    el("td", {}, el("span", { className: "status " + (w.stale ? "status-dead"
                                                               : "status-succeeded") },
                   w.stale ? "stale" : "live")),
    el("td", { className: "num" }, w.stale ? "–" : `${busy} of ${pool}`),
    el("td", {}, when(w.last_heartbeat, ` (${seconds(w.heartbeat_age_seconds)} ago)`)),
    el("td", { className: "num" }, rate(w.jobs_per_second)),
    el("td", { className: "num" }, rate(w.rows_per_second)),
    el("td", { className: "num" }, count(w.jobs_total)),
    el("td", { className: "num" }, count(w.rows_total)));
  row.dataset.worker = w.name;
  row.dataset.stale = String(w.stale);
  return row;
}

function renderWorkers(body) {
  fill("worker-list", body.workers.map(workerRow), 11,
       "no worker has sent a heartbeat in the last ten minutes: start one (predq worker)");
}

function renderRates(body) {
  $("jobs-rate").textContent = rate(body.jobs_per_second);
  $("rows-rate").textContent = rate(body.rows_per_second);
}

function drawQueues(body) {
  const measure = MEASURES[$("queue-measure").value] ? $("queue-measure").value : "jobs";
  renderQueues(body.samples, measure);
}

export function boardSections() {
  const values = filtersToAddress();
  const searchable = !values.id || ID_PREFIX.test(values.id);
  $("job-search-note").textContent = searchable ? "" : "ids hold hex digits and dashes only";
  return [
    section("queue-chart-section", () => api("/v1/queues/history?minutes=15"), drawQueues),
    searchable ? section("jobs-section", () => api("/v1/jobs?" + listQuery(values)), renderJobs)
               : Promise.resolve(fill("jobs", [], 8, "no job id looks like that")),
    section("throughput-section", () => api("/v1/stats?minutes=15"), (body) => {
      renderRates(body);
      renderThroughput(body.minutes);
      renderLatency(body.minutes);
    }),
    section("workers-section", () => api("/v1/workers"), renderWorkers),
    section("models-section", loadModels, renderModels),
    section("failures-section", () => api("/v1/webhooks/failures/groups?limit=20"),
            renderFailures),
  ];
}

