// The dashboard's shared pieces: the API with the viewer's key, DOM helpers that put every
// value from the API into the page as text (never as HTML), and one way to write each kind of
// figure: counts with separators, times as 24-hour clock times, durations, rates.

export const KEY_STORE = "predq.key";
export const $ = (id) => document.getElementById(id);

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, error) {
    super(`${status} ${error.code || ""}: ${error.message || ""}`);
    this.status = status;
    this.code = error.code;
  }
}

function headers(extra) {
  const key = localStorage.getItem(KEY_STORE);
  if (!key) throw new Unauthorized("no key");
  return { Authorization: "Bearer " + key, ...(extra || {}) };
}

export async function api(path, method) {
  const response = await fetch(path, { method: method || "GET", headers: headers() });
  if (response.status === 401) throw new Unauthorized("key refused");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.error || {});
  return body;
}

// A result file, fetched with the key (a plain link would not send it) and handed to the
// browser as a download.
export async function download(path, accept, filename) {
  const response = await fetch(path, { headers: headers({ Accept: accept }) });
  if (response.status === 401) throw new Unauthorized("key refused");
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body.error || {});
  }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export async function readyz() {
  // Unauthenticated; answers 503 with the failing check when a store is down.
  const response = await fetch("/readyz");
  return response.json();
}

export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ""));
  }
  return node;
}

export function fill(tableId, rows, columns, emptyText) {
  const body = $(tableId).tBodies[0];
  if (!rows.length) {
    body.replaceChildren(el("tr", {}, el("td", { className: "empty", colSpan: columns },
                                           emptyText)));
    return;
  }
  body.replaceChildren(...rows);
}

export function status(value) {
  return el("span", { className: "status status-" + value }, value);
}

export function count(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en");
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return value.toFixed(value < 10 ? 1 : 0) + " s";
  if (value < 3600) return Math.floor(value / 60) + " min " + Math.round(value % 60) + " s";
  return (value / 3600).toFixed(1) + " h";
}

export function millis(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
}

export function rate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? Math.round(value).toLocaleString("en") : String(+value.toFixed(2));
}

export function bytes(value) {
  if (value >= 1e9) return (value / 1e9).toFixed(1) + " GB";
  if (value >= 1e6) return (value / 1e6).toFixed(0) + " MB";
  return Math.round(value / 1e3) + " kB";
}

const CLOCK = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };

// Every time on the page in one format: the 24-hour clock time, with the day before it when
// it is not today; the exact UTC time is the element's title (see `when`).
export function stamp(iso) {
  if (!iso) return "–";
  const at = new Date(iso);
  const time = at.toLocaleTimeString("en-GB", CLOCK);
  if (at.toDateString() === new Date().toDateString()) return time;
  return at.toLocaleDateString("en-GB", { day: "numeric", month: "short" }) + " " + time;
}

export function when(iso, extra) {
  return el("span", { className: "time", title: iso || "" }, stamp(iso), extra || "");
}

export function jobLink(id) {
  return el("a", { href: "#/jobs/" + encodeURIComponent(id), className: "mono job-link",
                   title: id }, id);
}

export function progressBar(job) {
  // The colour says how the job ended, the length how much of it got done: a failed job is
  // never a full green bar. The percentage is written beside it.
  const bar = el("div", { className: "bar bar-" + job.status,
                          title: `${count(job.rows_done)} of ${count(job.rows_total)} rows` },
                 el("span"));
  bar.firstChild.style.width = job.percent + "%";
  return el("div", { className: "progress" }, bar,
            el("span", { className: "percent" }, `${+job.percent.toFixed(1)}%`));
}

export function sectionError(sectionId, error) {
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

// Each refresh round has a number; an answer that comes back after a newer round started (a
// filter changed meanwhile) is dropped: drawn, it would list the old filter's jobs under the
// new one.
export const rounds = { current: 0 };

export async function section(sectionId, load, render) {
  const mine = rounds.current;
  let body;
  try {
    body = await load();
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    if (mine === rounds.current) sectionError(sectionId, error); // shown, retried next round
    return;
  }
  if (mine !== rounds.current) return;
  try {
    render(body);
    sectionError(sectionId, null);
  } catch (error) {
    console.error(error); // a bug in this page: loud, but the other sections go on
    sectionError(sectionId, error);
  }
}
