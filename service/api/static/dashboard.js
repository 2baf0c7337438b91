// predq dashboard: reads the same JSON API as any client, with the viewer's key, every few
// seconds. No framework, no build step: ES modules under dashboard/. Three views, chosen by
// the address's fragment so a link can be shared: the board (#/ with the job list's filters,
// e.g. #/?status=failed&priority=bulk), the workers (#/workers) and a job's page
// (#/jobs/<id>). This module holds the key, the routes and the refresh loop.

import { boardSections, filtersFromAddress, renderHealth, turnPage } from "./dashboard/board.js";
import { $, KEY_STORE, Unauthorized, readyz, rounds, section } from "./dashboard/core.js";
import { act, clearJobPage, downloadResult, jobSections, showMissing } from "./dashboard/jobpage.js";
import { workerSections } from "./dashboard/workers.js";

const REFRESH_MS = 3000;
let timer = null;

// --- the key: from #key=... (asked first if it would replace another), else local storage,
// else the prompt -------------------------------------------------------------------------

function masked(key) {
  return key.slice(0, 10) + "…";
}

function takeKeyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const offered = (params.get("key") || "").trim();
  if (!offered) return;
  history.replaceState(null, "", location.pathname + location.search); // off the address bar
  const held = localStorage.getItem(KEY_STORE);
  if (!held || held === offered) {
    localStorage.setItem(KEY_STORE, offered);
    return;
  }
  // A link must not silently swap the key this browser holds (it may be another tenant's).
  $("key-offer-text").textContent = `This link carries the API key ${masked(offered)}; this ` +
    `browser holds ${masked(held)}. Use the link's key instead?`;
  $("key-offer").dataset.key = offered;
  $("key-offer").hidden = false;
  clearTimeout(timer);
  for (const id of ["board", "job-page", "workers-page", "login"]) $(id).hidden = true;
}

function answerOffer(accept) {
  const offered = $("key-offer").dataset.key;
  $("key-offer").hidden = true;
  delete $("key-offer").dataset.key;
  if (accept && offered) localStorage.setItem(KEY_STORE, offered);
  start();
}

function showLogin(message, isError) {
  clearTimeout(timer);
  for (const id of ["board", "job-page", "workers-page", "change-key"]) $(id).hidden = true;
  $("login").hidden = false;
  if (message) {
    $("login-message").textContent = message;
    $("login-message").className = isError ? "error" : "";
  }
  $("key").focus();
}

// --- where we are ----------------------------------------------------------------------------

function route() {
  const hash = location.hash.slice(1);
  if (hash === "/workers") return { view: "workers" };
  const job = hash.match(/^\/jobs\/([^/?#]+)$/);
  if (job) {
    try {
      return { view: "job", id: decodeURIComponent(job[1]) };
    } catch {
      return { view: "job", id: job[1], malformed: true }; // %E0%A4%A: no id is spelt so
    }
  }
  const query = hash.startsWith("/?") ? hash.slice(2) : "";
  return { view: "board", filters: new URLSearchParams(query) };
}

function showView(view) {
  $("login").hidden = true;
  $("change-key").hidden = false;
  $("nav-board").classList.toggle("current", view === "board");
  $("nav-workers").classList.toggle("current", view === "workers");
  $("board").hidden = view !== "board";
  $("job-page").hidden = view !== "job";
  $("workers-page").hidden = view !== "workers";
}

// --- the refresh loop ------------------------------------------------------------------------

function sections(where) {
  const head = section("queues-section", readyz, renderHealth); // the header's figures
  if (where.view === "job") {
    return [head, ...(where.malformed ? [Promise.resolve(showMissing(where.id))]
                                      : jobSections(where.id))];
  }
  return [head, ...(where.view === "workers" ? workerSections() : boardSections())];
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++rounds.current; // a refresh started meanwhile (filter change) owns the timer
  try {
    await Promise.all(sections(route()));
  } catch (error) {
    if (error instanceof Unauthorized) {
      if (mine !== rounds.current) return; // a key pasted since then is being tried
      localStorage.removeItem(KEY_STORE);
      showLogin("That key was refused (revoked, or from another installation). Paste another.",
                true);
      return;
    }
    throw error;
  }
  if (mine !== rounds.current) return;
  $("updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB", { hour12: false });
  timer = setTimeout(refresh, REFRESH_MS);
}

function start() {
  if (!$("key-offer").hidden) return; // the viewer is asked first
  if (!localStorage.getItem(KEY_STORE)) {
    showLogin();
    return;
  }
  const where = route();
  if (where.view === "board") filtersFromAddress(where.filters);
  else if (where.view === "job" && $("job-id").textContent !== where.id) clearJobPage();
  showView(where.view);
  refresh();
}

async function onAction(action) {
  try {
    await act(route().id, action);
  } catch (error) {
    if (!(error instanceof Unauthorized)) throw error;
  }
  refresh();
}

// --- wiring ------------------------------------------------------------------------------------

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
$("key-offer-use").addEventListener("click", () => answerOffer(true));
$("key-offer-keep").addEventListener("click", () => answerOffer(false));
for (const id of ["job-status", "job-model", "job-priority", "job-range", "job-sort"]) {
  $(id).addEventListener("change", refresh);
}
$("queue-measure").addEventListener("change", refresh);
$("job-search").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(refresh, 250); // one request when the typing pauses, not one per key
});
$("jobs-prev").addEventListener("click", () => turnPage(-1) && refresh());
$("jobs-next").addEventListener("click", () => turnPage(1) && refresh());
for (const id of ["jobs", "failures"]) {
  // A click anywhere on a job's row opens its page (the id itself is a link too).
  $(id).tBodies[0].addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-job-id]");
    if (row && !event.target.closest("a")) location.hash = "#/jobs/" +
      encodeURIComponent(row.dataset.jobId);
  });
}
$("job-cancel").addEventListener("click", () => {
  $("job-cancel").hidden = true; // asked first: a cancel cannot be undone
  $("job-confirm").hidden = false;
  $("job-cancel-no").focus();
});
$("job-cancel-no").addEventListener("click", () => {
  $("job-confirm").hidden = true;
  refresh();
});
$("job-cancel-yes").addEventListener("click", () => onAction("cancel"));
$("job-retry").addEventListener("click", () => onAction("retry"));
$("job-redeliver").addEventListener("click", () => onAction("redeliver"));
$("job-download").addEventListener("click", () => downloadResult(route().id));
window.addEventListener("hashchange", () => { takeKeyFromFragment(); start(); });

takeKeyFromFragment();
start();
