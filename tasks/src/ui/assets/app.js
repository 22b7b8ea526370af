// cocoflow ui: one page, hash routes, no dependencies. Every user-derived text goes through
// text nodes (el() below), never through innerHTML.
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v; // (the CSP allows CSSOM, not style attributes)
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const enc = encodeURIComponent;

async function apiText(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  const text = await r.text();
  if (!r.ok) { let m = text; try { m = JSON.parse(text).error || text; } catch (_) {} throw new Error(m); }
  return text;
}

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  if (!r.ok) throw new Error((body && body.error) || (r.status + " " + r.statusText));
  return body;
}

function fmtTime(ms) { return ms ? new Date(ms).toLocaleString() : ""; }
function fmtDur(a, b) {
  if (!a) return "";
  const s = ((b || Date.now()) - a) / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return (s / 3600).toFixed(1) + " h";
}
function num(v, d) { return (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d === undefined ? 3 : d); }

// Each route gets a view token: a view still awaiting when the route changes draws nothing
// more, and what it registers to clean up runs at once.
let current = { alive: false, cleanup: [] };
function newView() {
  current.alive = false;
  for (const f of current.cleanup) { try { f(); } catch (_) {} }
  current = {
    alive: true, cleanup: [],
    onLeave(f) { if (this.alive) this.cleanup.push(f); else { try { f(); } catch (_) {} } },
    mount(...nodes) { return this.alive ? mount(...nodes) : null; },
  };
  return current;
}

function mount(...nodes) {
  const app = $("#app");
  app.replaceChildren(...nodes);
  return app;
}

function showError(e) { mount(el("p", { class: "error", id: "error" }, String(e.message || e))); }

// ---------------------------------------------------------------------------------------
// Zoom

function zoom(src, caption) {
  $("#zoom-img").src = src;
  $("#zoom-caption").textContent = caption || "";
  $("#zoom").classList.remove("hidden");
}
function tile(src, caption, extra) {
  return el("img", Object.assign({ class: "tile", src, alt: caption || "", title: caption || "", onclick: () => zoom(src, caption) }, extra || {}));
}

// ---------------------------------------------------------------------------------------
// Runs

async function viewRuns(v) {
  const table = el("table", { id: "runs" });
  const draw = async () => {
    const d = await api("/api/runs");
    const rows = d.runs.map(r => el("tr", { dataset: { run: r.id, status: r.status } },
      el("td", {}, el("a", { href: "#/run/" + enc(r.id) }, r.id)),
      el("td", {}, r.workflow_name), el("td", {}, r.workflow),
      el("td", {}, el("span", { class: "badge " + r.status }, r.status + (r.live ? " (live)" : ""))),
      el("td", {}, fmtTime(r.started_ms)), el("td", { class: "num" }, fmtDur(r.started_ms, r.finished_ms)),
      el("td", { class: "num" }, r.instances), el("td", { class: "num" }, r.cached)));
    table.replaceChildren(el("tr", {}, ...["run", "workflow", "file", "status", "started", "duration", "instances", "cached"].map(h => el("th", {}, h))), ...rows);
    if (!d.runs.length) table.appendChild(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No runs yet in " + d.state_dir)));
  };
  v.mount(el("h1", {}, "Runs"), table);
  await draw();
  const t = setInterval(() => draw().catch(() => {}), 2000);
  v.onLeave(() => clearInterval(t));
}

// `rl[2].eval[lambda_sim=0.2]` → task `rl.eval`, arm `lambda_sim=0.2`, iteration 2.
function parseName(name) {
  const parts = [];
  let depth = 0, cur = "";
  for (const ch of name) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (ch === "." && depth === 0) { parts.push(cur); cur = ""; } else cur += ch;
  }
  parts.push(cur);
  let arm = "", iter = null;
  const task = parts.map(p => {
    const m = p.match(/^([^[]*)(?:\[(.*)\])?$/);
    if (!m) return p;
    if (m[2] !== undefined) {
      if (/^\d+$/.test(m[2])) iter = Number(m[2]); else arm = m[2];
    }
    return m[1];
  }).join(".");
  return { task, arm, iter };
}

async function viewRun(v, id) {
  const head = el("div", {});
  const grid = el("table", { class: "grid", id: "dag" });
  const detail = el("div", { class: "panel", id: "detail" }, el("p", { class: "muted" }, "Click an instance for its attempts, log and outputs."));
  const feed = el("div", { class: "feed", id: "feed" });
  const reports = el("ul", { id: "reports" });
  const progress = {};
  let state = null, selected = null;
  v.mount(head, el("h2", {}, "Tasks by arm"), grid, el("div", { class: "cols" },
    el("div", {}, el("h2", {}, "Instance"), detail),
    el("div", {}, el("h2", {}, "Reports"), reports, el("h2", {}, "Events"), feed)));

  const drawHead = () => {
    const r = state.run, inst = state.instances;
    const count = s => inst.filter(i => i.state === s).length;
    const finished = inst.filter(i => ["succeeded", "cached", "failed", "blocked", "interrupted"].includes(i.state)).length;
    const pct = inst.length ? (100 * finished / inst.length) : 0;
    head.replaceChildren(
      el("h1", {}, "Run ", el("span", { id: "run-id" }, r.id), " · ", r.workflow_name),
      el("p", {}, el("span", { class: "badge " + state.status, id: "run-status" }, state.status + (state.live ? " (live)" : "")), " ",
        el("span", { class: "bar" }, el("span", { style: "width:" + pct.toFixed(1) + "%" })), " ",
        el("span", { id: "run-counts" }, `${finished}/${inst.length} finished · ${count("running")} running · ${count("succeeded")} ran · ${count("cached")} cached · ${count("failed")} failed`)),
      el("p", { class: "muted" }, r.workflow, " · started ", fmtTime(r.started_ms), " · ", fmtDur(r.started_ms, r.finished_ms), " · store ", r.store));
  };
  const drawGrid = () => {
    const tasks = [], arms = [], cells = {};
    for (const i of state.instances) {
      const p = parseName(i.name);
      if (!tasks.includes(p.task)) tasks.push(p.task);
      if (!arms.includes(p.arm)) arms.push(p.arm);
      (cells[p.task + "\u0000" + p.arm] = cells[p.task + "\u0000" + p.arm] || []).push([i, p]);
    }
    grid.replaceChildren(el("tr", {}, el("th", {}, "task"), ...arms.map(a => el("th", {}, a || "—"))),
      ...tasks.map(t => el("tr", {}, el("td", { class: "task" }, t), ...arms.map(a => el("td", {},
        ...(cells[t + "\u0000" + a] || []).map(([i, p]) => {
          const pr = progress[i.key];
          const tip = `${i.name}\n${i.state}${i.attempts > 1 ? " (attempt " + i.attempts + ")" : ""}${i.gpus.length ? "\nGPUs " + i.gpus.join(",") : ""}${pr ? "\n" + pr : ""}`;
          return el("span", { class: "inst state-" + i.state + (selected === i.key ? " selected" : ""), title: tip,
            dataset: { name: i.name, state: i.state, key: i.key }, onclick: () => { selected = i.key; drawGrid(); drawDetail(); } },
            p.iter !== null ? p.iter : "•");
        }))))));
    const reps = state.instances.filter(i => i.kind === "report" && (i.state === "succeeded" || i.state === "cached"));
    reports.replaceChildren(...reps.map(i => el("li", {}, el("a", { href: `#/report/${enc(id)}/${enc(i.key)}`, class: "report-link" }, i.name))));
    if (!reps.length) reports.appendChild(el("li", { class: "muted" }, "none yet"));
  };
  let logTimer = null;
  const drawDetail = async () => {
    const i = state && state.instances.find(x => x.key === selected);
    if (!i) return;
    const log = el("pre", { class: "log", id: "log" }, "…");
    const outs = el("ul", { id: "outputs" });
    detail.replaceChildren(el("h3", {}, i.name),
      el("table", {}, ...[["kind", i.kind], ["state", i.state], ["attempts", i.attempts], ["duration", fmtDur(i.started_ms, i.finished_ms)],
        ["GPUs", i.gpus.length ? i.gpus.join(", ") : "none"], ["progress", progress[i.key] || ""], ["error", i.error || ""], ["key", i.key]]
        .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v))))),
      el("h4", {}, "Log (tail)"), log, el("h4", {}, "Outputs"), outs);
    const loadLog = async () => {
      try { log.textContent = await apiText(`/api/runs/${enc(id)}/log/${enc(i.key)}?tail=20000`); } catch (e) { log.textContent = e.message; }
    };
    await loadLog();
    clearInterval(logTimer);
    if (i.state === "running") logTimer = setInterval(loadLog, 1000);
    try {
      const o = await api(`/api/runs/${enc(id)}/outputs/${enc(i.key)}`);
      for (const [name, a] of Object.entries(o.outputs)) {
        const href = f => `/api/runs/${enc(id)}/file/${enc(i.key)}/${enc(name)}` + (f ? "/" + f.split("/").map(enc).join("/") : "");
        outs.appendChild(el("li", {}, name, a.tree ? "/" : "", " ", a.tree ? "" : el("a", { href: href(""), target: "_blank" }, "open"),
          a.tree ? el("ul", {}, ...a.files.slice(0, 200).map(f => el("li", {}, el("a", { href: href(f.path), target: "_blank" }, f.path)))) : null));
      }
    } catch (e) { outs.replaceChildren(el("li", { class: "muted" }, e.message)); }
  };
  v.onLeave(() => clearInterval(logTimer));

  state = await api("/api/runs/" + enc(id));
  drawHead(); drawGrid();
  const es = new EventSource(`/api/runs/${enc(id)}/stream`);
  $("#conn").textContent = "live";
  es.addEventListener("state", ev => {
    const prev = state && state.instances.find(x => x.key === selected);
    state = JSON.parse(ev.data);
    drawHead(); drawGrid();
    const now = state.instances.find(x => x.key === selected);
    if (now && (!prev || prev.state !== now.state)) drawDetail();
  });
  es.addEventListener("run-event", ev => {
    const e = JSON.parse(ev.data);
    if (e.event === "progress" && e.key) progress[e.key] = (e.total ? `${e.done}/${e.total} ` : "") + (e.message || "");
    const line = [e.event, e.name || e.run || "", e.state || "", e.message || "", e.error ? "— " + e.error.split("\n")[0] : ""].filter(Boolean).join(" ");
    feed.prepend(el("div", { class: "ev ev-" + e.event }, (e.t_ms ? new Date(e.t_ms).toLocaleTimeString() + " " : "") + line));
    while (feed.childNodes.length > 200) feed.lastChild.remove();
  });
  es.onerror = () => { $("#conn").textContent = "reconnecting…"; };
  es.onopen = () => { $("#conn").textContent = "live"; };
  v.onLeave(() => { es.close(); $("#conn").textContent = ""; });
}

// ---------------------------------------------------------------------------------------
// Reports

function parseCsv(text) {
  const rows = []; let row = [], f = "", q = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (q) { if (c === '"') { if (text[i + 1] === '"') { f += '"'; i++; } else q = false; } else f += c; }
    else if (c === '"') q = true;
    else if (c === ",") { row.push(f); f = ""; }
    else if (c === "\n") { row.push(f); rows.push(row); row = []; f = ""; }
    else if (c !== "\r") f += c;
  }
  if (f !== "" || row.length) { row.push(f); rows.push(row); }
  return rows;
}

function sortableTable(header, rows, id) {
  const table = el("table", { id, class: "sortable-table" });
  let col = -1, dir = 1;
  const draw = () => {
    const sorted = rows.slice();
    if (col >= 0) sorted.sort((a, b) => {
      const x = parseFloat(a[col]), y = parseFloat(b[col]);
      const c = (!Number.isNaN(x) && !Number.isNaN(y)) ? x - y : String(a[col]).localeCompare(String(b[col]));
      return c * dir;
    });
    table.replaceChildren(el("tr", {}, ...header.map((h, j) => el("th", {
      class: "sortable" + (j === col ? (dir > 0 ? " sorted-asc" : " sorted-desc") : ""), dataset: { col: j },
      onclick: () => { dir = (col === j) ? -dir : 1; col = j; draw(); } }, h))),
      ...sorted.map(r => el("tr", {}, ...r.map(v => {
        const x = Number(v), numeric = v !== "" && !Number.isNaN(x);
        // 4 decimals shown, the full value in the tooltip (sorting uses the full value)
        return el("td", { class: numeric ? "num" : "nowrap", title: v }, numeric && v.includes(".") ? x.toFixed(4) : v);
      }))));
  };
  draw();
  return table;
}

async function viewReport(v, run, key) {
  const o = await api(`/api/runs/${enc(run)}/outputs/${enc(key)}`);
  const outName = o.outputs.report ? "report" : Object.keys(o.outputs)[0];
  const out = o.outputs[outName];
  const files = (out.files || []).map(f => f.path);
  const url = p => `/api/runs/${enc(run)}/file/${enc(key)}/${enc(outName)}/` + p.split("/").map(enc).join("/");
  const body = el("div", { id: "report-body" });
  const tabs = {};
  const show = async name => {
    for (const [n, b] of Object.entries(tabs)) b.classList.toggle("active", n === name);
    body.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    try {
      if (name === "table") body.replaceChildren(await reportTable(url, files));
      else if (name === "plots") body.replaceChildren(reportPlots(url, files));
      else body.replaceChildren(await reportBrowser(url, files));
    } catch (e) { body.replaceChildren(el("p", { class: "error" }, e.message)); }
  };
  for (const [n, label] of [["table", "Table"], ["plots", "Plots"], ["images", "Images"]])
    tabs[n] = el("button", { id: "tab-" + n, onclick: () => show(n) }, label);
  v.mount(el("h1", {}, "Report · ", o.name), el("p", { class: "muted" }, el("a", { href: "#/run/" + enc(run) }, "run " + run)),
    el("div", { class: "tabs" }, Object.values(tabs)), body);
  await show("table");
}

async function reportTable(url, files) {
  if (!files.includes("table.csv")) return el("p", { class: "muted" }, "This report has no table.csv.");
  const rows = parseCsv(await apiText(url("table.csv"))).filter(r => r.length > 1);
  return sortableTable(rows[0], rows.slice(1), "report-table");
}

function reportPlots(url, files) {
  const pngs = files.filter(f => f.endsWith(".png") && !f.includes("/"));
  if (!pngs.length) return el("p", { class: "muted" }, "No plots.");
  return el("div", { class: "cols", id: "plots" }, ...pngs.map(p => el("figure", {},
    el("img", { src: url(p), alt: p, style: "max-width:560px", onclick: () => zoom(url(p), p) }), el("figcaption", {}, p))));
}

async function reportBrowser(url, files) {
  if (!files.includes("browser/index.json")) return el("p", { class: "muted" }, "This report has no image browser (browser/index.json).");
  const idx = await api(url("browser/index.json"));
  const cols = idx.columns;
  const byId = Object.fromEntries(cols.map(c => [c.id, c]));
  const typeSel = el("select", { id: "edit-type-filter" }, el("option", { value: "" }, "all edit types"), ...idx.edit_types.map(t => el("option", { value: t }, t)));
  const armCols = cols.filter(c => c.id !== "base");
  const pick = (id, def) => el("select", { id }, ...cols.map(c => el("option", { value: c.id, selected: c.id === def }, c.label)));
  const selA = pick("flip-a", (armCols[0] || cols[0] || {}).id);
  const selB = pick("flip-b", (armCols[armCols.length - 1] || cols[0] || {}).id);
  let showing = "a";
  const flipBtn = el("button", { id: "flip", class: "primary" }, "Flip A ⇄ B");
  const table = el("table", { class: "browser", id: "browser" });
  const scoreText = e => e ? `judge ${num(e.judge_overall, 2)} (effect ${num(e.judge_effect, 2)}, quality ${num(e.judge_quality, 2)}) · PSNR ${num(e.psnr_db, 1)} dB · SSIM ${num(e.ssim, 3)}` : "not evaluated";
  const draw = () => {
    const t = typeSel.value;
    const cur = showing === "a" ? selA.value : selB.value;
    const items = idx.items.filter(i => !t || i.edit_type === t);
    table.replaceChildren(el("tr", {}, el("th", {}, "instruction"), el("th", {}, "source"), el("th", {}, "edit mask"),
      el("th", { id: "flip-head" }, "flip: " + (showing === "a" ? "A" : "B") + " · " + (byId[cur] || {}).label),
      ...cols.map(c => el("th", {}, c.label))),
      ...items.map(i => {
        const fe = i.edits[cur];
        return el("tr", { class: "browser-item", dataset: { key: i.key, editType: i.edit_type } },
          el("td", {}, el("div", { class: "instruction-text" }, i.instruction), el("div", { class: "muted" }, i.edit_type)),
          el("td", {}, i.source ? tile(url(i.source), "source · " + i.instruction) : "–"),
          el("td", {}, i.overlay ? tile(url(i.overlay), "edit mask · " + i.instruction) : "–"),
          el("td", { class: "flip-cell" }, fe ? tile(url(fe.image), (byId[cur] || {}).label + " · " + i.instruction, { class: "tile flip-img", dataset: { column: cur } }) : "–",
            el("div", { class: "scores flip-label" }, (byId[cur] || {}).label), el("div", { class: "scores" }, scoreText(fe))),
          ...cols.map(c => {
            const e = i.edits[c.id];
            return el("td", {}, e ? tile(url(e.image), c.label + " · " + i.instruction) : "–", el("div", { class: "scores" }, scoreText(e)));
          }));
      }));
  };
  typeSel.onchange = draw; selA.onchange = draw; selB.onchange = draw;
  flipBtn.onclick = () => { showing = showing === "a" ? "b" : "a"; draw(); };
  draw();
  return el("div", {}, el("p", {}, "Filter ", typeSel, " · A ", selA, " B ", selB, " ", flipBtn,
    el("span", { class: "muted" }, " (click an image to zoom; key F flips)")), table);
}

document.addEventListener("keydown", e => {
  if (e.key === "Escape") $("#zoom").classList.add("hidden");
  if ((e.key === "f" || e.key === "F") && $("#flip") && !/INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)) $("#flip").click();
});

// ---------------------------------------------------------------------------------------
// Studies

async function viewStudies(v) {
  const d = await api("/api/studies");
  v.mount(el("h1", {}, "Studies"),
    el("p", { class: "muted" }, "Define one with `cocoflow study new NAME --method LABEL=RUN:EVAL-INSTANCE …` (two or more methods)."),
    el("table", { id: "studies" }, el("tr", {}, ...["study", "methods", "samples", "answers", "annotators", ""].map(h => el("th", {}, h))),
      ...d.studies.map(s => el("tr", { dataset: { study: s.name } }, el("td", {}, s.name), el("td", {}, s.methods.join(", ")),
        el("td", { class: "num" }, s.samples), el("td", { class: "num" }, s.answers),
        el("td", {}, Object.entries(s.annotators).map(([a, n]) => `${a} (${n})`).join(", ")),
        el("td", {}, el("a", { href: `#/study/${enc(s.name)}/annotate`, class: "annotate-link" }, "annotate"), " · ",
          el("a", { href: `#/study/${enc(s.name)}/results`, class: "results-link" }, "results"))))));
}

async function viewAnnotate(v, name) {
  const who = sessionStorage.getItem("annotator") || "";
  const input = el("input", { id: "annotator", value: who, placeholder: "your name (letters, digits, _ . -)" });
  const box = el("div", { id: "annotate" });
  const start = el("button", { id: "start", class: "primary", onclick: () => {
    sessionStorage.setItem("annotator", input.value.trim());
    loadNext(name, input.value.trim(), box, null);
  } }, "Start / resume");
  v.mount(el("h1", {}, "Study · ", name), el("p", {}, "Annotator ", input, " ", start), box);
  if (who) await loadNext(name, who, box, null);
}

async function loadNext(name, annotator, box, sample) {
  let d;
  try {
    d = await api(`/api/studies/${enc(name)}/next?annotator=${enc(annotator)}` + (sample ? "&sample=" + enc(sample) : ""));
  } catch (e) { box.replaceChildren(el("p", { class: "error", id: "annotate-error" }, e.message)); return; }
  const nav = el("p", { class: "muted" }, "Samples: ", ...d.samples.map((s, i) => el("a", {
    href: "#", class: s.done ? "done" : "", onclick: ev => { ev.preventDefault(); loadNext(name, annotator, box, s.key); } }, (i + 1) + (s.done ? "✓" : "") + " ")));
  const prog = el("p", { id: "study-progress" }, `${d.done}/${d.total} answered by ${d.annotator}`);
  if (!d.sample) {
    box.replaceChildren(prog, el("p", { id: "study-complete" }, "All samples answered — thank you. ",
      el("a", { href: `#/study/${enc(name)}/results` }, "See the results")), nav);
    return;
  }
  const s = d.sample, n = s.slots.length;
  const selects = [];
  const cands = s.slots.map(c => el("div", { class: "cand", dataset: { slot: c.slot } },
    el("div", {}, el("b", {}, "Method " + c.slot)),
    el("img", { src: c.image, alt: "method " + c.slot, onclick: () => zoom(c.image, "method " + c.slot) }),
    ...d.criteria.map(cr => {
      const prev = s.previous && s.previous[cr] ? s.previous[cr][c.slot] : null;
      const sel = el("select", { dataset: { criterion: cr, slot: c.slot }, class: "rank" },
        el("option", { value: "" }, "–"), ...Array.from({ length: n }, (_, k) => el("option", { value: k + 1, selected: prev === k + 1 }, String(k + 1))));
      selects.push(sel);
      return el("label", {}, (cr === "success" ? "editing success" : cr) + " rank ", sel);
    })));
  const msg = el("p", { id: "submit-msg", class: "error" });
  const submit = el("button", { id: "submit", class: "primary", onclick: async () => {
    const ranks = {};
    for (const sel of selects) {
      if (!sel.value) { msg.textContent = "Give every method a rank for both criteria (1 = best; equal ranks are ties)."; return; }
      (ranks[sel.dataset.criterion] = ranks[sel.dataset.criterion] || {})[sel.dataset.slot] = Number(sel.value);
    }
    submit.disabled = true;
    try {
      await api(`/api/studies/${enc(name)}/answers`, { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ annotator, sample: s.key, ranks, order_seed: s.order_seed }) });
      await loadNext(name, annotator, box, null);
    } catch (e) { msg.textContent = e.message; submit.disabled = false; }
  } }, "Submit and next");
  box.replaceChildren(prog, el("p", { class: "muted" }, `Sample ${s.index + 1} · ${s.edit_type}`),
    el("div", { class: "instruction", id: "study-instruction" }, s.instruction),
    el("p", { class: "muted" }, "Rank the methods for each criterion: 1 = best, equal numbers are ties. Editing success: did it do what was asked? Consistency: did everything else stay as it was?"),
    el("div", { class: "study-sample" }, el("div", { class: "cand study-source" }, el("div", {}, el("b", {}, "Source")),
      el("img", { src: s.source, alt: "source", onclick: () => zoom(s.source, "source") })), ...cands),
    el("p", {}, submit), msg, nav);
}

async function viewResults(v, name) {
  const d = await api(`/api/studies/${enc(name)}/results`);
  const sm = d.summary;
  const parts = [el("h1", {}, "Results · ", d.study),
    el("p", {}, `${d.samples} samples · annotators: `, Object.entries(d.annotators).map(([a, n]) => `${a} (${n})`).join(", ") || "none",
      d.damaged.length ? el("span", { class: "error" }, ` · ${d.damaged.length} damaged record(s) ignored`) : null),
    el("p", {}, el("a", { href: `/api/studies/${enc(name)}/export.csv`, id: "export-csv" }, "export CSV"), " · ",
      el("a", { href: `/api/studies/${enc(name)}/export.json`, id: "export-json" }, "export JSON"))];
  parts.push(...renderSummary(sm, d.methods.map(m => m.label)));
  parts.push(el("h2", {}, "Methods"), el("table", {}, el("tr", {}, el("th", {}, "method"), el("th", {}, "run"), el("th", {}, "eval instance")),
    ...d.methods.map(m => el("tr", {}, el("td", {}, m.label), el("td", {}, m.run), el("td", {}, m.instance)))));
  v.mount(...parts);
}


function renderSummary(sm, methods) {
  const out = [];
  for (const c of sm.per_criterion) {
    const label = c.criterion === "success" ? "Editing success" : c.criterion[0].toUpperCase() + c.criterion.slice(1);
    out.push(el("h2", {}, label, el("span", { class: "muted" }, ` · ${c.n_answers} answers over ${c.n_samples} samples`)));
    out.push(el("table", { class: "results-ranks", dataset: { criterion: c.criterion } },
      el("tr", {}, el("th", {}, "method"), el("th", {}, "average rank (1 = best)"), el("th", {}, "95 % bootstrap interval"), el("th", {}, "n")),
      ...c.ranks.map(r => el("tr", { dataset: { method: r.method } }, el("td", {}, r.method),
        el("td", { class: "num avg-rank" }, num(r.mean_rank, 3)),
        el("td", { class: "num" }, r.ci_low === null ? "–" : `[${num(r.ci_low, 2)}, ${num(r.ci_high, 2)}]`), el("td", { class: "num" }, r.n)))));
    const wr = {};
    for (const w of c.win_rates) wr[w.method + "\u0000" + w.opponent] = w;
    out.push(el("p", { class: "muted" }, "Win rate of the row over the column (ties count half):"),
      el("table", { class: "results-wins" }, el("tr", {}, el("th", {}, ""), ...methods.map(m => el("th", {}, m))),
        ...methods.map(a => el("tr", {}, el("th", {}, a), ...methods.map(b => {
          const w = wr[a + "\u0000" + b];
          return el("td", { class: "num" }, a === b || !w ? "–" : `${num(w.rate, 2)} (${w.n})`);
        })))));
    const ag = c.agreement;
    out.push(el("p", { class: "agreement" }, "Agreement between annotators: Kendall's W ",
      el("b", {}, num(ag.kendall_w, 3)), ` over ${ag.n_samples} sample(s) with two or more annotators; pairwise agreement `,
      el("b", {}, num(ag.pairwise, 3)), ` (${ag.n_pairs} pairs).`));
  }
  if (sm.per_edit_type.length) {
    out.push(el("h2", {}, "By edit type"));
    out.push(el("table", { id: "results-types" }, el("tr", {}, el("th", {}, "edit type"), el("th", {}, "criterion"), ...methods.map(m => el("th", {}, m)), el("th", {}, "n")),
      ...sm.per_edit_type.flatMap(t => t.criteria.map(c => el("tr", {}, el("td", {}, t.edit_type), el("td", {}, c.criterion),
        ...methods.map(m => { const r = c.ranks.find(x => x.method === m); return el("td", { class: "num" }, r ? num(r.mean_rank, 2) : "–"); }),
        el("td", { class: "num" }, c.n_answers))))));
  }
  if (sm.skipped) out.push(el("p", { class: "error" }, `${sm.skipped} answer(s) skipped (a method without a rank).`));
  return out;
}

// ---------------------------------------------------------------------------------------
// Routing

async function route() {
  const v = newView();
  const h = location.hash.replace(/^#\/?/, "");
  const p = h.split("/").map(decodeURIComponent);
  try {
    if (!h) await viewRuns(v);
    else if (p[0] === "run" && p[1]) await viewRun(v, p[1]);
    else if (p[0] === "report" && p[1] && p[2]) await viewReport(v, p[1], p[2]);
    else if (p[0] === "studies") await viewStudies(v);
    else if (p[0] === "study" && p[1] && p[2] === "annotate") await viewAnnotate(v, p[1]);
    else if (p[0] === "study" && p[1] && p[2] === "results") await viewResults(v, p[1]);
    else v.mount(el("p", { class: "error" }, "Unknown page: " + location.hash));
  } catch (e) { if (v.alive) showError(e); }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("#zoom").addEventListener("click", () => $("#zoom").classList.add("hidden"));
  // A token in the URL became a cookie (HttpOnly); drop it from the address bar.
  if (location.search.includes("token=")) history.replaceState(null, "", location.pathname + location.hash);
  route();
});
