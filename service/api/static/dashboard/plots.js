// The board's charts, drawn as inline SVG: throughput and latency per minute, and the queues'
// depth over time. Scales step by round values and say in their labels what they stand for.

import { $, millis, count, stamp } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
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

function hhmm(iso) {
  return new Date(iso).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit",
                                                      hour12: false });
}

// Grid lines and labels for `times` (ISO strings, one per slot, oldest first).
function axes(plot, times, { step, top, steps }, format) {
  const nodes = [];
  for (let i = 0; i <= steps; i++) {
    const value = step * i;
    const y = TOP + (H - TOP - BOTTOM) * (1 - value / top);
    nodes.push(svg("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "grid" }));
    nodes.push(svg("text", { x: LEFT - 4, y: y + 3, "text-anchor": "end", class: "axis y-label",
                             "data-value": value }, format(value)));
  }
  const width = (W - LEFT - RIGHT) / Math.max(1, times.length);
  for (const i of new Set([0, Math.floor(times.length / 2), times.length - 1])) {
    if (i < 0) continue;
    const label = hhmm(times[i]);
    nodes.push(svg("text", { x: LEFT + width * (i + 0.5), y: H - 6, "text-anchor": "middle",
                             class: "axis" }, label));
  }
  plot.replaceChildren(...nodes);
  return { step: width, y: (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top) };
}

export function renderThroughput(minutes) {
  const plot = $("throughput");
  const range = scale(Math.max(...minutes.map((m) => m.finished)), true);
  const { step, y } = axes(plot, minutes.map((m) => m.minute), range, String);
  minutes.forEach((m, i) => {
    const x = LEFT + step * i + step * 0.15, width = step * 0.7;
    const title = svg("title", {}, `${stamp(m.minute)}: ${m.succeeded} succeeded, ${m.failed} failed, ` +
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

export function renderLatency(minutes) {
  const plot = $("latency");
  const known = minutes.filter((m) => m.p99_ms !== null);
  const range = scale(Math.max(0, ...known.map((m) => m.p99_ms)), false);
  const { step, y } = axes(plot, minutes.map((m) => m.minute), range,
                           msLabel(range.top, range.step));
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
      dot.append(svg("title", {}, `${stamp(m.minute)}: ${cls} ${millis(m[field])}`));
      plot.append(dot);
    });
    if (d) plot.append(svg("path", { d, class: cls }));
  }
}

const QUEUES = ["predict.interactive", "predict.normal", "predict.bulk"];
export const MEASURES = {
  jobs: ["jobs waiting", count],
  chunks: ["bulk chunks not done", count],
  rows: ["rows waiting", count],
  oldest_age_seconds: ["oldest wait, s", (v) => (v === null ? "–" : v.toFixed(0) + " s")],
};

// One line per predict queue: `measure` of each sample (a ten-second reading), oldest first.
export function renderQueues(samples, measure) {
  const plot = $("queue-chart");
  const times = samples.map((s) => s.at);
  const value = (s, q) => (s.queues[q] ? s.queues[q][measure] : null);
  const known = samples.flatMap((s) => QUEUES.map((q) => value(s, q))).filter((v) => v !== null);
  const whole = measure !== "oldest_age_seconds";
  const range = scale(Math.max(0, ...known), whole);
  if (!samples.length) {
    axes(plot, [], range, String);
    plot.append(svg("text", { x: (W + LEFT) / 2, y: H / 2, "text-anchor": "middle",
                              class: "nodata" }, "no samples yet: the reconciler takes one " +
                                                 "every ten seconds"));
    return;
  }
  const { step, y } = axes(plot, times, range, (v) => count(v));
  for (const queue of QUEUES) {
    let d = "", pen = "M";
    samples.forEach((s, i) => {
      const v = value(s, queue);
      if (v === null) { pen = "M"; return; }
      d += `${pen}${(LEFT + step * (i + 0.5)).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    });
    const line = svg("path", { d: d || "M0,0", class: "q-" + queue.split(".")[1],
                               "data-queue": queue });
    const last = samples[samples.length - 1];
    line.append(svg("title", {}, `${queue}: ${MEASURES[measure][1](value(last, queue))} at ` +
                                 stamp(last.at)));
    plot.append(line);
  }
}
