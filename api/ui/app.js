// The dashboard: plain JS, no build step. The key lives in sessionStorage and goes in every request.
"use strict";
const $ = (sel) => document.querySelector(sel);
const view = () => $("#view");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
let timers = [];

function showError(msg) { const e = $("#error"); e.textContent = msg; e.hidden = !msg; }
function key() { return sessionStorage.getItem("composer-key"); }

async function api(path, opts = {}) {
  const headers = Object.assign({"Authorization": "Bearer " + key()}, opts.body ? {"Content-Type": "application/json"} : {}, opts.headers || {});
  let r;
  try { r = await fetch(path, Object.assign({}, opts, {headers})); }
  catch (e) { throw new Error("The request failed: " + e.message); }
  if (r.status === 401) { sessionStorage.removeItem("composer-key"); route(); throw new Error("Your key is unknown, revoked or expired. Enter a valid key."); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((body.title || r.status) + ": " + (body.detail || body));
  return body;
}

function table(cols, rows, empty) {
  if (!rows.length) return `<p class="empty">${esc(empty)}</p>`;
  return `<table><thead><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

function chart(id, points, label) {
  const w = 520, h = 160, pad = 24;
  if (!points.length) return `<svg class="chart" id="${id}" width="${w}" height="${h}"><text x="20" y="80">no ${esc(label)} yet</text></svg>`;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + (x - x0) / ((x1 - x0) || 1) * (w - 2 * pad), sy = (y) => h - pad - (y - y0) / ((y1 - y0) || 1) * (h - 2 * pad);
  const pts = points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
  return `<svg class="chart" id="${id}" width="${w}" height="${h}"><text x="${pad}" y="14">${esc(label)} (${y0.toFixed(3)} – ${y1.toFixed(3)})</text><polyline fill="none" stroke="#3d7ef0" stroke-width="2" points="${pts}"/></svg>`;
}

// ---- jobs ----------------------------------------------------------------------------------
async function jobsPage() {
  view().innerHTML = `<h2>Jobs</h2><form id="job-filter"><label>Status <select id="f-status"><option value="">any</option>${["queued","running","succeeded","failed","cancelled"].map((s) => `<option>${s}</option>`).join("")}</select></label><label>Type <select id="f-type"><option value="">any</option>${["adapter","multitask","fusion","prompts","evaluate"].map((s) => `<option>${s}</option>`).join("")}</select></label></form><div id="jobs-list">loading…</div>`;
  const load = async () => {
    const q = new URLSearchParams({limit: 100});
    if ($("#f-status").value) q.set("status", $("#f-status").value);
    if ($("#f-type").value) q.set("type", $("#f-type").value);
    const data = await api("/v1/jobs?" + q);
    $("#jobs-list").innerHTML = table(["job", "type", "status", "progress", "created"], data.items.map((j) => [
      `<a href="#/jobs/${esc(j.id)}">${esc(j.id)}</a>`, esc(j.type), `<span class="status ${esc(j.status)}">${esc(j.status)}</span>`,
      j.progress && j.progress.total ? `${j.progress.step}/${j.progress.total}` : "", esc(j.created_at.slice(0, 19))]), "No jobs yet. Submit one with POST /v1/jobs or adapterctl.");
  };
  $("#job-filter").addEventListener("change", () => load().catch((e) => showError(e.message)));
  await load();
}

async function jobPage(id) {
  view().innerHTML = `<h2>Job <code>${esc(id)}</code></h2><div class="card"><p>Status: <span id="job-status" class="status"></span> <button id="cancel" type="button">Cancel</button></p><div class="bar"><div id="job-bar" style="width:0%"></div></div><p id="job-step"></p></div><div id="charts"></div><h3>Checkpoints</h3><div id="ckpts"></div><div id="job-error"></div><h3>Result</h3><pre id="job-result"></pre>`;
  const loss = [], metric = [];
  let seq = 0, done = false;
  const draw = (job) => {
    $("#job-status").textContent = job.status; $("#job-status").className = "status " + job.status;
    const p = job.progress || {};
    if (p.total) { $("#job-bar").style.width = (100 * p.step / p.total).toFixed(1) + "%"; $("#job-step").textContent = `step ${p.step} of ${p.total}, epoch ${p.epoch ?? 0}`; }
    if (job.status === "succeeded") $("#job-bar").style.width = "100%";
    $("#charts").innerHTML = chart("loss-chart", loss, "training loss") + chart("metric-chart", metric, "validation metric");
    $("#job-result").textContent = job.result ? JSON.stringify(job.result, null, 2) : "";
    $("#cancel").disabled = ["succeeded", "failed", "cancelled"].includes(job.status);
  };
  $("#cancel").addEventListener("click", async () => { try { draw(await api(`/v1/jobs/${id}/cancel`, {method: "POST"})); } catch (e) { showError(e.message); } });
  const tick = async () => {
    const ev = await api(`/v1/jobs/${id}/events?after=${seq}`);
    for (const e of ev.items) {
      seq = e.seq;
      if (e.type === "progress" && e.payload.loss !== undefined) loss.push([e.payload.step, e.payload.loss]);
      if (e.type === "metric") { const m = Object.entries(e.payload).find(([k]) => k === "accuracy" || k === "mean" || k.endsWith("/accuracy") || k === "pearson"); if (m) metric.push([e.payload.step ?? metric.length, m[1]]); }
      if (e.type === "error") $("#job-error").innerHTML = `<h3>Error</h3><div class="error">${esc(e.payload.message)}</div><pre id="traceback">${esc(e.payload.traceback)}</pre>`;
    }
    const job = await api(`/v1/jobs/${id}`);
    draw(job);
    const cks = await api(`/v1/jobs/${id}/checkpoints`);
    $("#ckpts").innerHTML = table(["step", "attempt", "size", "saved"], cks.map((c) => [c.step, c.attempt, c.size, esc(c.created_at.slice(0, 19))]), "No checkpoints yet.");
    done = ["succeeded", "failed", "cancelled"].includes(job.status);
  };
  await tick();
  const t = setInterval(() => { if (!done) tick().catch((e) => showError(e.message)); }, 1000);
  timers.push(t);
}

// ---- registry ---------------------------------------------------------------------------------
async function registryPage() {
  const [adapters, tasks] = await Promise.all([api("/v1/adapters?limit=200"), api("/v1/tasks")]);
  const taskName = Object.fromEntries(tasks.map((t) => [t.id, t.name]));
  view().innerHTML = `<h2>Registry</h2><div id="adapters"></div><div class="card"><h3>Request a fusion</h3><p>Tick 2 to 16 adapters above, then:</p><label>Task <select id="fuse-task">${tasks.map((t) => `<option>${esc(t.name)}</option>`).join("")}</select></label><label>Train dataset <input id="fuse-train" placeholder="ds_..."></label><label>Validation dataset <input id="fuse-val" placeholder="ds_... (optional)"></label><button id="fuse" type="button">Fuse</button><p id="fuse-result"></p></div><div id="lineage"></div>`;
  $("#adapters").innerHTML = table(["", "adapter", "task", "kind", "version", "status", "metrics"], adapters.items.map((a) => [
    a.kind === "st_a" || a.kind === "mt_a" ? `<input type="checkbox" class="pick" value="${esc(a.id)}">` : "",
    `<a href="#/registry/${esc(a.id)}">${esc(a.name)}</a>`, esc(taskName[a.task_id] || a.task_id), esc(a.kind), a.version, esc(a.status),
    esc(Object.entries(a.metrics || {}).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", "))]), "No adapters yet. Train one first.");
  $("#fuse").addEventListener("click", async () => {
    const picked = [...document.querySelectorAll(".pick:checked")].map((c) => c.value);
    if (picked.length < 2 || picked.length > 16) { showError("Pick between 2 and 16 adapters to fuse."); return; }
    const body = {task: $("#fuse-task").value, adapters: picked, train_dataset: $("#fuse-train").value};
    if ($("#fuse-val").value) body.validation_dataset = $("#fuse-val").value;
    try { const job = await api("/v1/fusions", {method: "POST", body: JSON.stringify(body)}); showError(""); $("#fuse-result").innerHTML = `Fusion job <a id="fusion-job" href="#/jobs/${esc(job.id)}">${esc(job.id)}</a> is ${esc(job.status)}.`; }
    catch (e) { showError(e.message); }
  });
}

async function lineagePage(id) {
  const a = await api(`/v1/adapters/${id}`);
  const members = a.members ? a.members.map((m) => `<li><a href="#/registry/${esc(m)}">${esc(m)}</a></li>`).join("") : "";
  view().innerHTML = `<h2>${esc(a.name)} v${a.version} <small>(${esc(a.kind)})</small></h2><div class="card"><p>Status ${esc(a.status)}, ${a.param_count} parameters, job <a href="#/jobs/${esc(a.job_id)}">${esc(a.job_id)}</a></p>${members ? `<h3>Fusion members, in order</h3><ol id="members">${members}</ol>` : ""}${a.sets.length ? `<h3>Sets</h3><ul>${a.sets.map((s) => `<li>${esc(s.kind)}: ${esc(s.name)}</li>`).join("")}</ul>` : ""}<h3>Metrics</h3><pre>${esc(JSON.stringify(a.metrics, null, 2))}</pre></div>`;
}

// ---- try it ----------------------------------------------------------------------------------------
async function tryPage() {
  const [adapters, ensembles] = await Promise.all([api("/v1/adapters?status=ready&limit=200"), api("/v1/ensembles")]);
  const opts = adapters.items.filter((a) => a.kind !== "soft_prompt").map((a) => `<option value="adapter:${esc(a.id)}">${esc(a.kind)} · ${esc(a.name)} v${a.version}</option>`)
    .concat(ensembles.map((e) => `<option value="ensemble:${esc(e.id)}">ensemble · ${esc(e.name)}</option>`));
  view().innerHTML = `<h2>Try it</h2><form id="try-form"><p><select id="try-target">${opts.join("")}</select></p><p><textarea id="try-text" rows="3" cols="70" placeholder="Type a text"></textarea></p><button id="try-run" type="submit">Predict</button></form><div id="try-out"></div>`;
  if (!opts.length) $("#try-out").innerHTML = `<p class="empty">Nothing to try yet: train an adapter or prompts first.</p>`;
  $("#try-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const [kind, id] = $("#try-target").value.split(":");
    const inputs = [{text: $("#try-text").value || " "}];
    try {
      if (kind === "ensemble") {
        const r = await api(`/v1/ensembles/${id}/predict`, {method: "POST", body: JSON.stringify({inputs})});
        const o = r.outputs[0];
        $("#try-out").innerHTML = `<div class="card"><p>Label <b id="try-label">${esc(o.label)}</b>, agreement ${(100 * o.agreement).toFixed(0)}%${o.tie_break ? " (tie broken by mean probability)" : ""}</p>${table(["prompt", "vote", "probability"], o.per_prompt.map((p) => [esc(p.prompt), p.skipped ? "skipped" : esc(p.label), p.skipped ? "" : p.probability.toFixed(3)]), "")}</div>`;
      } else {
        const r = await api("/v1/predict", {method: "POST", body: JSON.stringify({adapter: id, inputs, return_fusion_attention: true})});
        const o = r.outputs[0];
        let html = `<div class="card"><p>Label <b id="try-label">${esc(o.label ?? o.value)}</b></p>${o.probabilities ? table(["label", "probability"], Object.entries(o.probabilities).map(([k, v]) => [esc(k), v.toFixed(3)]), "") : ""}`;
        if (o.fusion_attention) {
          const fa = o.fusion_attention;
          html += `<h3>Fusion attention (top adapter: ${esc(fa.top_adapter)})</h3><table class="heat" id="heatmap"><tr><th>layer</th>${fa.adapters.map((a) => `<th>${esc(a.slice(0, 12))}</th>`).join("")}</tr>${Object.entries(fa.layers).map(([layer, ws]) => `<tr><td>${esc(layer)}</td>${ws.map((w) => `<td class="cell" style="background: rgba(61,126,240,${w.toFixed(3)})">${w.toFixed(2)}</td>`).join("")}</tr>`).join("")}</table>`;
        }
        $("#try-out").innerHTML = html + "</div>";
      }
      showError("");
    } catch (e) { showError(e.message); }
  });
}

// ---- routing -----------------------------------------------------------------------------------------
async function route() {
  timers.forEach(clearInterval); timers = [];
  const hasKey = !!key();
  $("#login").hidden = hasKey; $("#nav").hidden = !hasKey;
  if (!hasKey) { view().innerHTML = ""; return; }
  const h = location.hash || "#/jobs";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", h.startsWith(a.getAttribute("href"))));
  try {
    const m = h.match(/^#\/(jobs|registry|try)(?:\/(.+))?$/);
    if (!m || m[1] === "jobs") await (m && m[2] ? jobPage(m[2]) : jobsPage());
    else if (m[1] === "registry") await (m[2] ? lineagePage(m[2]) : registryPage());
    else await tryPage();
  } catch (e) { showError(e.message); }
}

$("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); sessionStorage.setItem("composer-key", $("#key").value.trim()); showError(""); route(); });
$("#logout").addEventListener("click", () => { sessionStorage.removeItem("composer-key"); route(); });
window.addEventListener("hashchange", route);
route();
