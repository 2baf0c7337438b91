// A job's page (#/jobs/<id>): what it is and was given, where it ran, its timeline, chunks,
// result, webhook deliveries, and what this key may do to it: cancel (asked twice), retry,
// redeliver, download the result.

import {
  $, ApiError, api, count, download, el, fill, jobLink, millis, progressBar, section, stamp,
  status, when,
} from "./core.js";

const FORMATS = { json: "JSON", csv: "CSV", ndjson: "NDJSON", npy: ".npy", parquet: "Parquet",
                  arrow: "Arrow", "arrow-file": "Arrow" };
const SOURCES = { json: "in the request", upload: "upload", file: "file by reference" };

function fact(label, value, name) {
  const dd = el("dd", {}, value);
  if (name) dd.dataset.fact = name;
  return [el("dt", {}, label), dd];
}

function workerLinks(names) {
  if (!names.length) return "not claimed yet";
  const links = names.map((n) => el("a", { href: "#/workers", className: "mono" }, n));
  return el("span", {}, ...links.flatMap((link, i) => (i ? [", ", link] : [link])));
}

function renderFacts(job, input, workers) {
  const format = FORMATS[input.format] || input.format || "?";
  $("job-facts").replaceChildren(
    ...fact("model", `${job.model} ${job.version}`),
    ...fact("priority", job.priority),
    ...fact("input", `${count(input.rows)} rows × ${count(input.columns)} columns, ${format} ` +
                     SOURCES[input.source], "input"),
    ...fact("rows", `${count(job.rows_done)} of ${count(job.rows_total)} done`, "rows"),
    ...fact("progress", progressBar(job)),
    ...fact(workers.length > 1 ? "workers" : "worker", workerLinks(workers), "workers"),
    ...fact("attempts", count(job.attempts)),
    ...(job.retry_of ? fact("retry of", jobLink(job.retry_of), "retry-of") : []),
    ...fact("from cache", job.from_cache ? "yes" : "no"),
    ...fact("deadline", job.deadline ? when(job.deadline) : "none"));
}

function renderTimeline(job, timeline) {
  const created = job.created_at;
  $("job-timeline").replaceChildren(...timeline.map((t) => {
    let label = t.step;
    if (t.step === "started" && job.attempts > 1) label += ` (attempt ${job.attempts})`;
    if (t.step === "finished" && t.at) label = job.status;
    const offset = t.at && t.step !== "created"
      ? ` (+${millis(Date.parse(t.at) - Date.parse(created))})` : "";
    const item = el("li", { className: t.at ? "reached" : "pending" },
                    el("span", { className: "step" }, label),
                    el("span", { className: "at" }, t.at ? when(t.at, offset) : "not yet"));
    item.dataset.step = t.step;
    return item;
  }));
}

function renderChunks(chunks) {
  $("job-chunks").hidden = !chunks;
  if (!chunks) return;
  const parts = [`${count(chunks.done)} done`, `${count(chunks.running)} running`,
                 `${count(chunks.pending)} pending`];
  if (chunks.stopped) parts.push(`${count(chunks.stopped)} stopped when the job ended`);
  $("job-chunks").textContent = `${count(chunks.total)} chunk${chunks.total === 1 ? "" : "s"}: ` +
    `${parts.join(", ")}; ` +
    `${count(chunks.attempts)} attempts`;
}

function renderError(job) {
  // A cancel is no error: it says who cancelled, as a note.
  const cancelled = job.status === "cancelled";
  $("job-error").hidden = !job.error || cancelled;
  $("job-error").textContent = cancelled ? "" : job.error || "";
  $("job-cancelled-by").hidden = !cancelled;
  $("job-cancelled-by").textContent = cancelled ? job.error || "cancelled" : "";
}

export function renderJobPage(body) {
  const { job, timeline, chunks, preview, deliveries, actions, input, workers } = body;
  $("job-missing").hidden = true;
  $("job-id").textContent = job.id;
  $("job-status-pill").replaceChildren(status(job.status));
  $("job-page").dataset.status = job.status;
  if (!actions.cancel) $("job-confirm").hidden = true;
  $("job-cancel").hidden = !actions.cancel || !$("job-confirm").hidden;
  $("job-retry").hidden = !actions.retry;
  $("job-redeliver").hidden = !actions.redeliver;
  $("job-download").hidden = job.status !== "succeeded";
  renderFacts(job, input, workers);
  renderError(job);
  renderTimeline(job, timeline);
  renderChunks(chunks);
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
    `first ${count(preview.predictions.length)} of ${count(preview.rows)} rows`;
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
      (a) => el("li", {}, when(a.at), " ",
                a.status_code ? el("span", { className: "code code-" + String(a.status_code)[0] },
                                   a.status_code) : "no answer",
                a.latency_ms !== null ? ` in ${millis(a.latency_ms)}` : "",
                a.error ? " – " + a.error : "")))
      : "not tried yet";
    const row = el("tr", {},
      el("td", { className: "mono id", title: e.id }, e.id),
      el("td", {}, e.type),
      el("td", { className: "mono url", title: e.url }, e.url),
      el("td", {}, status(e.status), e.next_attempt_at ? " next at " + stamp(e.next_attempt_at)
                                                       : ""),
      el("td", { className: "wrap" }, tries));
    row.dataset.eventId = e.id;
    return row;
  }), 5, "no webhook events for this job");
}

function say(text, isError) {
  // Not "error-note": that class marks a section's load error, removed on its next load.
  $("job-message").textContent = text;
  $("job-message").className = "note" + (isError ? " refused" : "");
}

const ACTIONS = {
  cancel: { path: "cancel", button: "job-cancel-yes",
            done: (b) => `cancelled: the job is ${b.status}` },
  retry: { path: "retry", button: "job-retry",
           done: (b) => el("span", {}, "retried as ", jobLink(b.id)) },
  redeliver: { path: "deliveries/redeliver", button: "job-redeliver",
               done: (b) => `${b.events.length} event${b.events.length === 1 ? "" : "s"} ` +
                            "sent again" },
};

// Runs an action on the job `id`; returns whether the page should refresh.
export async function act(id, action) {
  const { path, button, done } = ACTIONS[action];
  $(button).disabled = true;
  try {
    const body = await api(`/v1/jobs/${encodeURIComponent(id)}/${path}`, "POST");
    $("job-message").replaceChildren(done(body));
    $("job-message").className = "note";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    say(`${action} refused: ${error.message}`, true);
  } finally {
    $(button).disabled = false;
    $("job-confirm").hidden = true;
  }
}

export async function downloadResult(id) {
  try {
    await download(`/v1/jobs/${encodeURIComponent(id)}/result`, "text/csv", `${id}.csv`);
    say("result downloaded as CSV");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    say(`download refused: ${error.message}`, true);
  }
}

async function loadJobPage(id) {
  try {
    return await api(`/v1/jobs/${encodeURIComponent(id)}/overview`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

export function showMissing(id) {
  $("job-missing").hidden = false;
  $("job-id").textContent = id;
  $("job-page").dataset.status = "missing";
  for (const button of ["job-cancel", "job-retry", "job-redeliver", "job-download",
                        "job-confirm"]) {
    $(button).hidden = true;
  }
}

export function jobSections(id) {
  return [
    section("job-head", () => loadJobPage(id), (body) => {
      if (body === null) showMissing(id);
      else renderJobPage(body);
    }),
  ];
}

export function clearJobPage() {
  // Nothing of the previous job stays on screen while the next one loads.
  for (const id of ["job-id", "job-message", "job-preview-note", "job-chunks",
                    "job-cancelled-by"]) {
    $(id).textContent = "";
  }
  for (const id of ["job-facts", "job-timeline", "job-status-pill"]) $(id).replaceChildren();
  for (const id of ["job-preview", "job-deliveries"]) $(id).tBodies[0].replaceChildren();
  for (const id of ["job-cancel", "job-retry", "job-redeliver", "job-download", "job-confirm",
                    "job-error", "job-missing", "job-cancelled-by"]) {
    $(id).hidden = true;
  }
  delete $("job-page").dataset.status;
}
