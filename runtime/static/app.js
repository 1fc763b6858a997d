// genre-edge playground: talks to the same HTTP API as any client (GET /info, GET /items, POST /recommend,
// POST /items, DELETE /items/{id}). Text from the catalog is only ever set as textContent (an on-device item
// title is user input), and nothing is fetched from anywhere but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const KNOBS = ["query_weight", "mmr_lambda", "popularity_penalty", "exploration", "freshness_half_life_days"];
const state = { info: null, history: [], defaults: {}, touched: new Set(), seq: 0, shown: 0, timer: null, searchSeq: 0 };

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { ok: false, status: 0, message: "the server cannot be reached (" + e.message + ")" };
  }
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON: reported below */ }
  if (res.ok) return { ok: true, status: res.status, data };
  let message = data && data.detail !== undefined ? data.detail : res.statusText;
  if (Array.isArray(message)) message = message.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ");
  if (res.status === 401) message += " (enter the server's API key under On-device items)";
  return { ok: false, status: res.status, message: String(message) };
}

// ---------------------------------------------------------------- bundle description and defaults
async function loadInfo() {
  const r = await api("GET", "info");
  if (!r.ok) { $("bundle-info").textContent = "Cannot describe the bundle: " + r.message; return; }
  const i = r.data;
  state.info = i;
  state.defaults = i.defaults || {};
  const kept = i.quality && i.quality.ndcg_kept ? ", " + (100 * i.quality.ndcg_kept).toFixed(1) + "% of the teacher's quality kept" : "";
  $("bundle-info").textContent = `${i.bundle}: ${i.items} items, encoder ${i.variant} on profile ${i.profile}${kept}`;
  for (const side of ["include", "exclude"]) {
    const box = $(side);
    box.replaceChildren();
    for (const c of i.categories || []) {
      const cb = el("input", { type: "checkbox", value: c, "data-side": side });
      cb.addEventListener("change", () => { countChecks(); changed(); });
      box.append(el("label", { class: "check" }, cb, document.createTextNode(c)));
    }
  }
  if (i.years) { $("year_min").placeholder = i.years[0]; $("year_max").placeholder = i.years[1]; }
  // instructions in the catalog's own terms (a music catalog was offered "like Star Wars, but funnier")
  const ex = i.example_instructions || [];
  if (ex.length) $("query").placeholder = "e.g. " + ex.join("; or: ");
  resetKnobs();
  await search();
  recommend();
}

function resetKnobs() {
  state.touched.clear();
  for (const k of KNOBS) {
    const input = $(k);
    const d = state.defaults[k];
    input.value = d === undefined || d === null ? (k === "query_weight" ? 0.5 : 0) : d;
    showKnob(k);
  }
}

function showKnob(k) {
  const out = $(k + "-out");
  if (!out) return;
  out.textContent = state.touched.has(k) ? Number($(k).value).toString() : (k === "query_weight" ? "automatic" : Number($(k).value) + " (default)");
}

function countChecks() {
  for (const side of ["include", "exclude"]) {
    const n = document.querySelectorAll(`#${side} input:checked`).length;
    $(side + "-count").textContent = n ? `(${n} chosen)` : "";
  }
}

// ---------------------------------------------------------------- history
async function search() {
  const q = $("search").value;
  const seq = ++state.searchSeq;
  const r = await api("GET", "items?limit=8&q=" + encodeURIComponent(q));
  if (seq !== state.searchSeq) return; // a newer search answered first
  const list = $("search-results");
  list.replaceChildren();
  if (!r.ok) { list.append(el("li", { text: r.message, class: "error" })); return; }
  for (const it of r.data.items) {
    const label = `${it.title}${it.year ? " (" + it.year + ")" : ""}`;
    const li = el("li", { "data-id": it.id },
      el("button", { type: "button", class: "pick", "aria-label": "Add " + label + " to the history", onclick: () => addHistory(it) },
        document.createTextNode(label)));
    if (it.on_device) {
      li.append(el("span", { class: "badge", text: "on device" }));
      li.append(el("button", { type: "button", "aria-label": "Remove " + label + " from the catalog", text: "Remove",
                               onclick: () => removeItem(it.id) }));
    }
    list.append(li);
  }
  if (!r.data.items.length) list.append(el("li", { class: "muted", text: "No item matches." }));
}

function addHistory(it) {
  if (state.history.some((h) => h.id === it.id)) state.history = state.history.filter((h) => h.id !== it.id);
  state.history.push({ id: it.id, title: it.title });
  const max = state.info && state.info.max_history;
  renderHistory();
  if (max && state.history.length > max) setStatus(`The user model reads the last ${max} items of the history.`);
  changed();
}

function renderHistory() {
  const ol = $("history");
  ol.replaceChildren();
  state.history.forEach((h, n) => {
    ol.append(el("li", { "data-id": h.id }, el("span", { text: h.title }),
      el("button", { type: "button", text: "Remove", "aria-label": "Remove " + h.title + " from the history",
                     onclick: () => { state.history.splice(n, 1); renderHistory(); changed(); $("search").focus(); } })));
  });
  $("history-empty").hidden = state.history.length > 0;
}

// ---------------------------------------------------------------- the request
function intOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function buildRequest() {
  const req = { history: state.history.map((h) => h.id), k: intOrNull("k") ?? 10, explain: true };
  const q = $("query").value.trim();
  if (q) req.query = q;
  if (!$("parse_query").checked) req.parse_query = false;
  if ($("strategy").value) req.strategy = $("strategy").value;
  for (const k of KNOBS) {
    if (!state.touched.has(k)) continue;
    const v = Number($(k).value);
    if (k !== "query_weight" && v === state.defaults[k]) continue;
    req[k] = v;
  }
  if (state.touched.has("exploration") && Number($("exploration").value) > 0) req.seed = intOrNull("seed") ?? 0;
  const inc = [...document.querySelectorAll("#include input:checked")].map((c) => c.value);
  const exc = [...document.querySelectorAll("#exclude input:checked")].map((c) => c.value);
  if (inc.length) req.include_categories = inc;
  if (exc.length) req.exclude_categories = exc;
  for (const y of ["year_min", "year_max"]) { const v = intOrNull(y); if (v !== null) req[y] = v; }
  if (!$("exclude_seen").checked) req.exclude_seen = false;
  return req;
}

function changed() {
  if (!$("live").checked) return;
  clearTimeout(state.timer);
  state.timer = setTimeout(recommend, 250);
}

function setStatus(text) { $("status").textContent = text; }

async function recommend() {
  clearTimeout(state.timer);
  const req = buildRequest();
  $("request-json").textContent = JSON.stringify(req, null, 2);
  const seq = ++state.seq;
  document.body.dataset.busy = "1";
  setStatus("Recommending…");
  const t0 = performance.now();
  const r = await api("POST", "recommend", req);
  if (seq !== state.seq) return; // a newer request is on its way: show that one
  const wall = performance.now() - t0;
  document.body.dataset.busy = "";
  if (!r.ok) {
    $("error").hidden = false;
    $("error").textContent = r.message;
    setStatus("");
  } else {
    $("error").hidden = true;
    render(r.data, wall);
  }
  $("results").dataset.seq = String(seq);
  $("results").dataset.request = JSON.stringify(req);
}

function render(res, wall) {
  const parsed = $("parsed");
  parsed.hidden = !res.parsed;
  if (res.parsed) parsed.textContent = "Understood: " + res.parsed.summary;
  const ol = $("items");
  ol.replaceChildren();
  for (const it of res.items) {
    const meta = [it.year || null, (it.categories || []).join(", "), "score " + it.score.toFixed(3)].filter(Boolean).join(" · ");
    const li = el("li", { "data-id": it.id }, el("div", { class: "title", text: it.title }), el("div", { class: "meta", text: meta }));
    if (it.reasons && it.reasons.length) {
      const ul = el("ul", { class: "reasons", "aria-label": "Why " + it.title });
      for (const why of it.reasons) {
        const name = why.source === "query" ? "the instruction" : why.title || why.id;
        const pct = Math.round(100 * why.share);
        const bar = el("span", { class: "bar" + (why.source === "query" ? " query" : ""), "aria-hidden": "true" }, el("span"));
        bar.firstChild.style.width = Math.max(0, Math.min(100, pct)) + "%";
        ul.append(el("li", {}, el("span", { class: "name", text: name, title: name }), bar, el("span", { class: "num", text: pct + "%" })));
      }
      li.append(ul);
    }
    li.append(el("button", { type: "button", text: "Add to history", "aria-label": "Add " + it.title + " to the history",
                            onclick: () => addHistory(it) }));
    ol.append(li);
  }
  if (!res.items.length) ol.append(el("li", { class: "muted", text: "Nothing passes these filters." }));
  const tb = $("timings").tBodies[0];
  tb.replaceChildren();
  const total = res.timings_ms.total || 1;
  for (const [stage, ms] of Object.entries(res.timings_ms)) {
    const bar = el("span", { class: "bar", "aria-hidden": "true" }, el("span"));
    bar.firstChild.style.width = (stage === "total" ? 100 : Math.min(100, (100 * ms) / total)) + "%";
    tb.append(el("tr", {}, el("td", { text: stage }), el("td", { class: "num", text: ms.toFixed(2) }), el("td", {}, bar)));
  }
  const unknown = res.unknown_ids && res.unknown_ids.length ? `; not in the catalog: ${res.unknown_ids.join(", ")}` : "";
  const cats = res.unknown_categories && res.unknown_categories.length ? `; no item has the categories: ${res.unknown_categories.join(", ")}` : "";
  setStatus(`${res.items.length} items, strategy ${res.strategy}, ${total.toFixed(1)} ms on the server (${wall.toFixed(0)} ms round trip)${unknown}${cats}`);
}

// ---------------------------------------------------------------- on-device catalog updates
function catalogStatus(text, bad) {
  $("catalog-status").textContent = text;
  $("catalog-status").className = bad ? "error" : "";
}

async function addItem(ev) {
  ev.preventDefault();
  const item = { id: $("new-id").value.trim(), title: $("new-title").value.trim(),
                 categories: $("new-categories").value.split(",").map((c) => c.trim()).filter(Boolean) };
  const year = intOrNull("new-year");
  if (year !== null) item.year = year;
  const text = $("new-text").value.trim();
  if (text) item.text = text;
  if (!item.id || !item.title) { catalogStatus("An item needs an id and a title.", true); return; }
  catalogStatus("Encoding and storing…");
  const r = await api("POST", "items", { items: [item] });
  if (!r.ok) { catalogStatus("Not added: " + r.message, true); return; }
  catalogStatus(`Added or updated ${item.id}.`);
  $("search").value = item.id;
  await Promise.all([search(), loadFacets()]);
  changed();
}

async function removeItem(id) {
  const r = await api("DELETE", "items/" + encodeURIComponent(id));
  if (!r.ok) { catalogStatus("Not removed: " + r.message, true); return; }
  catalogStatus(`Removed ${id}.`);
  await search();
  changed();
}

async function loadFacets() {
  // new categories of an added item become choosable; checked boxes stay checked
  const r = await api("GET", "info");
  if (!r.ok) return;
  for (const side of ["include", "exclude"]) {
    const box = $(side);
    const have = new Set([...box.querySelectorAll("input")].map((c) => c.value));
    for (const c of r.data.categories || []) {
      if (have.has(c)) continue;
      const cb = el("input", { type: "checkbox", value: c, "data-side": side });
      cb.addEventListener("change", () => { countChecks(); changed(); });
      box.append(el("label", { class: "check" }, cb, document.createTextNode(c)));
    }
  }
  state.info = r.data;
}

// ---------------------------------------------------------------- wiring
function wire() {
  let searchTimer = null;
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, 120); });
  $("search").addEventListener("keydown", async (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      clearTimeout(searchTimer);
      await search();
      const first = document.querySelector("#search-results li[data-id] .pick");
      if (first) { first.click(); $("search").select(); }
    } else if (ev.key === "ArrowDown") {
      const first = document.querySelector("#search-results .pick");
      if (first) { ev.preventDefault(); first.focus(); }
    }
  });
  $("search-results").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    const picks = [...document.querySelectorAll("#search-results .pick")];
    const at = picks.indexOf(document.activeElement);
    if (at < 0) return;
    ev.preventDefault();
    if (ev.key === "ArrowUp" && at === 0) $("search").focus();
    else picks[Math.max(0, Math.min(picks.length - 1, at + (ev.key === "ArrowDown" ? 1 : -1)))].focus();
  });
  $("clear-history").addEventListener("click", () => { state.history = []; renderHistory(); changed(); });
  for (const k of KNOBS) {
    $(k).addEventListener("input", () => { state.touched.add(k); showKnob(k); changed(); });
  }
  for (const id of ["query", "k", "seed", "year_min", "year_max"]) $(id).addEventListener("input", changed);
  for (const id of ["parse_query", "strategy", "exclude_seen"]) $(id).addEventListener("change", changed);
  $("form").addEventListener("submit", (ev) => { ev.preventDefault(); recommend(); });
  $("reset").addEventListener("click", () => { resetKnobs(); changed(); });
  $("add-form").addEventListener("submit", addItem);
  $("remove-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("remove-id").value.trim();
    if (id) removeItem(id); else catalogStatus("Give the id of the item to remove.", true);
  });
  $("api-key").addEventListener("change", () => { if (!state.info) loadInfo(); else { search(); changed(); } });
  renderHistory();
  loadInfo();
}

document.addEventListener("DOMContentLoaded", wire);
