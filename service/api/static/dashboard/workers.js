// The workers' view (#/workers): each worker with every process it runs, the pool processes
// busy or idle and with what, since when, and the CPU and memory of each.

import { $, api, bytes, count, el, fill, section, seconds, when } from "./core.js";
import { workerRow } from "./board.js";

function processRow(worker, p) {
  const state = p.role === "main" ? "main" : p.busy ? "busy" : "idle";
  const row = el("tr", { className: "process" },
    el("td", { className: "mono" }, `${worker.name}`),
    el("td", { className: "num mono" }, p.pid),
    el("td", {}, el("span", { className: "status state-" + state }, state)),
    el("td", {}, p.role === "main" ? "receives messages, beats" : p.task || "–"),
    el("td", {}, p.since ? when(p.since) : "–"),
    el("td", { className: "num" }, `${p.cpu_percent.toFixed(1)}%`),
    el("td", { className: "num" }, bytes(p.rss_bytes)));
  row.dataset.worker = worker.name;
  row.dataset.pid = String(p.pid);
  row.dataset.state = state;
  return row;
}

function renderWorkerView(body) {
  const live = body.workers.filter((w) => !w.stale);
  const processes = live.flatMap((w) => w.processes.map((p) => processRow(w, p)));
  const busy = live.flatMap((w) => w.processes).filter((p) => p.busy).length;
  const pool = live.flatMap((w) => w.processes).filter((p) => p.role === "pool").length;
  $("worker-summary").textContent = `${count(live.length)} live worker` +
    `${live.length === 1 ? "" : "s"}, ${busy} of ${pool} pool processes busy; stale after ` +
    `${seconds(body.stale_after_seconds)} without a heartbeat`;
  fill("worker-detail", body.workers.map(workerRow), 11, "no worker has sent a heartbeat in " +
       "the last ten minutes: start one (predq worker)");
  fill("worker-processes", processes, 7, live.length
    ? "no process figures yet: they come with the next heartbeat (every 10 s)"
    : "no live worker");
}

export function workerSections() {
  return [section("workers-view", () => api("/v1/workers"), renderWorkerView)];
}

