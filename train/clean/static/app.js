// The cleaning page: plain JS, no framework, no network beyond this server.
// Decisions live in `decisions` (path -> {action, label}) until "Apply" sends them all at once.
"use strict";

const PAGE = 240; // cards rendered at a time; more on "Show more" or when the cursor gets there
const state = {
  labels: [], items: [], byPath: new Map(), dupes: null,
  decisions: new Map(), view: "ranked", shown: PAGE, cursor: 0, cards: [],
};
const $ = (id) => document.getElementById(id);

// ---- data ------------------------------------------------------------------------------------
async function getJSON(url, options = {}) {
  const r = await fetch(url, {cache: "no-store", ...options});
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function loadItems() {
  const data = await getJSON("/api/items");
  state.labels = data.labels;
  state.items = data.items;
  state.byPath = new Map(data.items.map((it) => [it.path, it]));
  $("run").textContent = `${data.data} · ${data.layout} · ${data.items.length} images` +
    (data.top ? ` (top ${data.top})` : "") + (data.pending ? ` · ${data.pending} journalled` : "");
  $("run").title = `run: ${data.run}\njournal: ${data.journal}`;
  $("undo-cmd").textContent = data.undo;
  const damaged = data.journal_damaged || [];
  if (damaged.length) { // undo skips these lines; the files they moved are put back by hand
    say(`Undo will skip ${damaged.length} damaged journal line${damaged.length > 1 ? "s" : ""}: ` +
        damaged[0] + (damaged.length > 1 ? ` (and ${damaged.length - 1} more)` : ""), "error");
  }
  fillLabelFilter();
  $("help-numbers").innerHTML = "<kbd>1</kbd>–<kbd>9</kbd> relabel to: " +
    state.labels.slice(0, 9).map((l, i) => `<b>${i + 1}</b> ${esc(l)}`).join(" · ");
}

async function loadDupes() {
  try {
    state.dupes = await getJSON("/api/dupes");
  } catch (e) {
    state.dupes = {state: "failed", error: e.message};
  }
  if (state.dupes.state === "running" || state.dupes.state === "idle") {
    setTimeout(loadDupes, 700);
  }
  updateCounts();
  if (state.view === "dupes") render();
}

// ---- decisions -------------------------------------------------------------------------------
function decide(path, action, label) {
  const it = state.byPath.get(path);
  if (action === "keep" || (action === "relabel" && (!label || (it && it.label === label)))) {
    state.decisions.delete(path);
  } else {
    state.decisions.set(path, {action, label: action === "relabel" ? label : null});
  }
  for (const card of document.querySelectorAll(".card")) {
    if (card.dataset.path === path) paintCard(card);
  }
  updatePending();
}

function updatePending() {
  const ds = [...state.decisions.values()];
  const rel = ds.filter((d) => d.action === "relabel").length;
  const del = ds.filter((d) => d.action === "delete").length;
  $("pending").textContent = ds.length ? `${ds.length} change${ds.length > 1 ? "s" : ""}: ${rel} relabel, ${del} delete` : "no changes";
  $("apply").disabled = ds.length === 0;
}

async function apply() {
  if (!state.decisions.size) return;
  const decisions = [...state.decisions].map(([path, d]) => ({path, action: d.action, label: d.label}));
  $("apply").disabled = true;
  try {
    const body = await getJSON("/api/apply", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({decisions}),
    });
    state.decisions.clear();
    say(`Applied: ${body.summary}. To undo: ${body.undo}`, "ok");
    await loadItems();
    state.dupes = null;
    loadDupes();
    render();
  } catch (e) {
    say(`Not applied: ${e.message}`, "error");
  }
  updatePending();
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
  m.hidden = false;
}

// ---- rendering -------------------------------------------------------------------------------
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function fillLabelFilter() {
  const sel = $("f-label");
  const keep = sel.value;
  sel.innerHTML = '<option value="">all</option>' + state.labels.map((l) => `<option>${esc(l)}</option>`).join("");
  sel.value = state.labels.includes(keep) ? keep : "";
}

function filtered() {
  const label = $("f-label").value, split = $("f-split").value, wrong = $("f-wrong").checked;
  return state.items.filter((it) => (!label || it.label === label) && (!split || it.split === split) &&
    (!wrong || (it.predicted && it.predicted !== it.label)));
}

function card(path, extra, label) {
  const it = state.byPath.get(path) || {path, label: label || "?"};
  const q = encodeURIComponent(path);
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.path = path;
  const pred = it.predicted == null ? '<span class="muted">no prediction</span>' :
    `<span class="arrow">→</span><span class="tag pred ${it.predicted === it.label ? "right" : "wrong"}">${esc(it.predicted)}</span>` +
    (it.probability == null ? "" : `<span class="conf">${Math.round(it.probability * 100)}%</span>`);
  const options = state.labels.map((l) => `<option value="${esc(l)}"${l === it.label ? " disabled" : ""}>${esc(l)}${l === it.label ? " (given)" : ""}</option>`).join("");
  el.innerHTML = `
    <a class="thumb" href="/image?path=${q}" target="_blank" rel="noopener" tabindex="-1"><img loading="lazy" alt="${esc(path)}" src="/thumb?path=${q}"></a>
    <div class="badge"></div>
    <div class="meta">
      <div class="name" title="${esc(path)}">${esc(path)}</div>
      <div class="row"><span class="tag given">${esc(it.label)}</span>${pred}</div>
      <div class="row small">${it.loss == null ? "" : `<span>loss <b>${it.loss.toFixed(2)}</b></span>`}${it.split ? `<span class="split">${esc(it.split)}</span>` : ""}${extra || ""}</div>
    </div>
    <div class="actions">
      <button type="button" class="keep" data-act="keep" title="keep (Space)">Keep</button>
      <select data-act="relabel" title="relabel (r: to the predicted class, 1–9: to class n)" aria-label="relabel ${esc(path)}"><option value="">Relabel…</option>${options}</select>
      <button type="button" class="del" data-act="delete" title="delete: move to .quarantine (d)">Delete</button>
    </div>`;
  el.querySelector("img").addEventListener("error", () => el.classList.add("broken"));
  paintCard(el);
  return el;
}

function paintCard(el) {
  const d = state.decisions.get(el.dataset.path);
  el.classList.toggle("decided-delete", !!d && d.action === "delete");
  el.classList.toggle("decided-relabel", !!d && d.action === "relabel");
  el.querySelector(".badge").textContent = !d ? "" : d.action === "delete" ? "delete" : `→ ${d.label}`;
  el.querySelector("select").value = d && d.action === "relabel" ? d.label : "";
}

function render() {
  const view = $("view");
  view.innerHTML = "";
  $("filters").classList.toggle("disabled", state.view !== "ranked");
  for (const f of ["f-label", "f-split", "f-wrong"]) $(f).disabled = state.view !== "ranked";
  $("tab-ranked").setAttribute("aria-selected", String(state.view === "ranked"));
  $("tab-dupes").setAttribute("aria-selected", String(state.view === "dupes"));
  if (state.view === "ranked") renderRanked(view); else renderDupes(view);
  state.cards = [...view.querySelectorAll(".card")];
  state.cursor = Math.min(state.cursor, Math.max(0, state.cards.length - 1));
  moveCursor(0, false);
  updateCounts();
}

function renderRanked(view) {
  const items = filtered();
  const grid = document.createElement("div");
  grid.className = "grid";
  for (const it of items.slice(0, state.shown)) grid.appendChild(card(it.path));
  if (!items.length) grid.innerHTML = '<p class="empty">No images match these filters.</p>';
  view.appendChild(grid);
  $("more").hidden = items.length <= state.shown;
  $("more").textContent = `Show more (${items.length - state.shown} left)`;
}

function renderDupes(view) {
  $("more").hidden = true;
  const d = state.dupes;
  if (!d || d.state !== "done") {
    const text = !d ? "Scanning…" : d.state === "failed" ? `Duplicate scan failed: ${d.error}` :
      `Scanning for duplicates… ${d.done || 0} of ${d.total || "?"} images`;
    view.innerHTML = `<p class="empty">${esc(text)}</p>`;
    return;
  }
  const intro = document.createElement("p");
  intro.className = "intro muted";
  intro.textContent = `${d.groups.length} group${d.groups.length === 1 ? "" : "s"} among ${d.total} images. ` +
    `Exact: identical bytes (SHA-256). Near: 64-bit dHash within ${d.near_bits} bits and a similar mean colour. ` +
    "Largest image first in each group.";
  view.appendChild(intro);
  for (const g of d.groups) {
    addGroup(view, g.kind, `${g.kind === "exact" ? "Exact copies" : "Near-duplicates"} · ${g.items.length} files`,
      g.items.map((m) => {
        const how = m.identical ? "identical bytes" : m.distance == null ? "" : `distance ${m.distance}/64`;
        return card(m.path, `<span class="dim">${m.width}×${m.height} · ${kb(m.bytes)}${how ? " · " + how : ""}</span>`, m.label);
      }));
  }
  if (d.unreadable.length) {
    addGroup(view, "unreadable", `Cannot be decoded · ${d.unreadable.length} files`,
      d.unreadable.map((u) => card(u.path, `<span class="dim" title="${esc(u.error)}">${esc(u.error)}</span>`, u.label)));
  }
  if (!d.groups.length && !d.unreadable.length) view.insertAdjacentHTML("beforeend", '<p class="empty">No duplicates found.</p>');
}

function addGroup(view, kind, title, cards) {
  const sec = document.createElement("section");
  sec.className = `group ${kind}`;
  sec.innerHTML = `<h3>${title}</h3>`;
  const grid = document.createElement("div");
  grid.className = "grid";
  for (const c of cards) grid.appendChild(c);
  sec.appendChild(grid);
  view.appendChild(sec);
}

function kb(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
}

function updateCounts() {
  $("n-ranked").textContent = state.items.length;
  const d = state.dupes;
  $("n-dupes").textContent = !d || d.state === "running" || d.state === "idle" ? "…" :
    d.state === "done" ? d.groups.length + (d.unreadable.length ? ` + ${d.unreadable.length}` : "") : "!";
}

// ---- cursor and keys ---------------------------------------------------------------------------
function moveCursor(delta, scroll = true) {
  const want = state.cursor + delta;
  if (delta > 0 && want >= state.cards.length && state.view === "ranked" && !$("more").hidden) {
    state.shown += PAGE;
    render(); // keeps state.cursor; the new cards are there now
  }
  if (!state.cards.length) return;
  state.cards.forEach((c) => c.classList.remove("cursor"));
  state.cursor = Math.max(0, Math.min(state.cards.length - 1, want));
  const c = state.cards[state.cursor];
  c.classList.add("cursor");
  if (scroll) c.scrollIntoView({block: "nearest"});
}

function columns() {
  const cards = state.cards;
  if (!cards.length) return 1;
  const top = cards[state.cursor].offsetTop;
  return Math.max(1, cards.filter((c) => c.offsetTop === top && c.parentElement === cards[state.cursor].parentElement).length);
}

function current() {
  return state.cards[state.cursor];
}

function actOnCursor(action, label) {
  const c = current();
  if (!c) return;
  decide(c.dataset.path, action, label);
  moveCursor(1);
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const tag = e.target.tagName;
  if (tag === "SELECT" || tag === "INPUT" || tag === "TEXTAREA") {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  const c = current();
  const it = c && state.byPath.get(c.dataset.path);
  const k = e.key;
  if (k === "ArrowRight" || k === "j") moveCursor(1);
  else if (k === "ArrowLeft" || k === "k") moveCursor(-1);
  else if (k === "ArrowDown") moveCursor(columns());
  else if (k === "ArrowUp") moveCursor(-columns());
  else if (k === " " || k === "0") actOnCursor("keep");
  else if (k === "d" || k === "Delete") actOnCursor("delete");
  else if (k === "r" && it && it.predicted) actOnCursor("relabel", it.predicted);
  else if (/^[1-9]$/.test(k) && state.labels[+k - 1]) actOnCursor("relabel", state.labels[+k - 1]);
  else if (k === "o" && c) window.open(c.querySelector("a.thumb").href, "_blank", "noopener");
  else if (k === "t") switchView(state.view === "ranked" ? "dupes" : "ranked");
  else if (k === "A") apply();
  else if (k === "?") $("help").classList.toggle("collapsed");
  else return;
  e.preventDefault();
}

function switchView(view) {
  state.view = view;
  state.cursor = 0;
  state.shown = PAGE;
  render();
  window.scrollTo(0, 0);
}

function pointAt(c) {
  const i = state.cards.indexOf(c);
  if (i >= 0) moveCursor(i - state.cursor, false);
}

function onClick(e) {
  const el = e.target.closest("[data-act]");
  const c = e.target.closest(".card");
  if (c) pointAt(c);
  if (!el || el.tagName === "SELECT" || !c) return;
  decide(c.dataset.path, el.dataset.act);
  el.blur(); // give the keys back to the page
}

function onChange(e) {
  if (e.target.matches("select[data-act=relabel]")) {
    const c = e.target.closest(".card");
    pointAt(c);
    decide(c.dataset.path, "relabel", e.target.value);
    e.target.blur();
    return;
  }
  if (["f-label", "f-split", "f-wrong"].includes(e.target.id)) {
    state.cursor = 0;
    state.shown = PAGE;
    render();
    e.target.blur();
  }
}

async function main() {
  document.addEventListener("keydown", onKey);
  $("view").addEventListener("click", onClick);
  document.addEventListener("change", onChange);
  $("apply").addEventListener("click", apply);
  $("tab-ranked").addEventListener("click", () => switchView("ranked"));
  $("tab-dupes").addEventListener("click", () => switchView("dupes"));
  $("more").addEventListener("click", () => { state.shown += PAGE; render(); });
  try {
    await loadItems();
  } catch (e) {
    say(`Could not load the run: ${e.message}`, "error");
    return;
  }
  render();
  document.body.dataset.ready = "1"; // for tests and scripts: the first render is done
  loadDupes();
}

main();
