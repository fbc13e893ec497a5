// The registry: adapters to tick for a fusion (datasets picked from lists), and an adapter's page with
// its lineage graph; a fusion's page adds its score against each member and its attention per layer.
import {$, $$, allPages, api, datasetLabel, esc, fmt, key, newKey, options, showError, table, view} from "./core.js";
import {heatMap} from "./charts.js";
import {adapterLineage} from "./lineage.js";

const FUSABLE = ["st_a", "mt_a"];

export async function registryPage() {
  const [items, tasks] = await Promise.all([allPages("/v1/adapters?status=ready"), api("/v1/tasks")]);
  const taskName = Object.fromEntries(tasks.map((t) => [t.id, t.name]));
  view().innerHTML = `<h2>Registry</h2><div id="adapters"></div>
  <form id="fuse-form" class="card" aria-labelledby="fuse-title"><h3 id="fuse-title">Request a fusion</h3>
    <p>Tick 2 to 16 adapters of one base above (the target task's own adapter among them starts the fusion), then:</p>
    <p><label for="fuse-task">Target task</label> <select id="fuse-task">${options(tasks, (t) => t.name, (t) => t.name)}</select></p>
    <p><label for="fuse-train">Train dataset</label> <select id="fuse-train" required></select></p>
    <p><label for="fuse-val">Validation dataset</label> <select id="fuse-val"></select></p>
    <p><input type="checkbox" id="fuse-warm" checked> <label for="fuse-warm">Warm start from the target's own adapter</label></p>
    <p><input type="checkbox" id="fuse-require"> <label for="fuse-require">Fail unless the fusion beats its start on validation</label></p>
    <button id="fuse" type="submit">Fuse</button><p id="fuse-result" role="status"></p></form>`;
  $("#adapters").innerHTML = table(["", "adapter", "task", "kind", "version", "metrics"], items.map((a) => [
    FUSABLE.includes(a.kind) ? `<input type="checkbox" class="pick" value="${esc(a.id)}" id="pick-${esc(a.id)}" aria-label="Fuse ${esc(a.name)} v${a.version}">` : "",
    `<a href="#/registry/${esc(a.id)}">${esc(a.name)}</a>`, esc(taskName[a.task_id] || a.task_id), esc(a.kind), a.version,
    esc(Object.entries(a.metrics || {}).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", "))]),
  "No adapters yet. Train one first.", 'id="adapters-table"');
  const form = $("#fuse-form");
  form.dataset.idempotencyKey = newKey();
  const fill = async () => {
    const task = $("#fuse-task").value;
    if (!task) return;
    const [tr, va] = await Promise.all(["train", "validation"].map((s) => api(`/v1/tasks/${encodeURIComponent(task)}/datasets?split=${s}&limit=200`)));
    $("#fuse-train").innerHTML = tr.items.length ? options(tr.items, (d) => d.id, datasetLabel) : `<option value="">no train dataset for this task</option>`;
    $("#fuse-val").innerHTML = `<option value="">none</option>` + options(va.items, (d) => d.id, datasetLabel, va.items[0] && va.items[0].id);
  };
  $("#fuse-task").addEventListener("change", () => fill().catch((e) => showError(e.message)));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const picked = $$(".pick:checked").map((c) => c.value);
    if (picked.length < 2 || picked.length > 16) { showError("Pick between 2 and 16 adapters to fuse."); return; }
    const body = {task: $("#fuse-task").value, members: picked, train_dataset: $("#fuse-train").value,
      warm_start: $("#fuse-warm").checked, require_improvement: $("#fuse-require").checked};
    if ($("#fuse-val").value) body.validation_dataset = $("#fuse-val").value;
    $("#fuse").disabled = true;
    try {
      const job = await api("/v1/fusions", {method: "POST", body, headers: {"Idempotency-Key": form.dataset.idempotencyKey}});
      showError("");
      location.hash = `#/jobs/${job.id}`;
    } catch (e) { showError(e.message); $("#fuse").disabled = false; }
  });
  await fill();
}

function comparisonTable(a, names) {
  const cmp = (a.metrics || {}).comparison;
  const att = (a.metrics || {}).mean_attention || {};
  if (!cmp) return "";
  const best = cmp.best_member || {};
  const rows = Object.entries(cmp.members).map(([id, sc]) => [
    `<a href="#/registry/${esc(id)}">${esc(names[id] || id)}</a>${id === best.id ? " <strong>(best member)</strong>" : ""}`,
    sc === null ? "another task's adapter" : fmt(sc), fmt(att[id], 3)]);
  rows.push([`<strong>this fusion</strong>`, `<strong id="fusion-score">${fmt(cmp.fusion)}</strong>`, ""]);
  const delta = best.score !== undefined && cmp.fusion !== null ? cmp.fusion - best.score : null;
  const verdict = delta === null ? "" : `<p id="fusion-verdict" class="${delta >= 0 ? "ok" : "warn"}">Fusion minus its best member: ${delta >= 0 ? "+" : ""}${delta.toFixed(4)} ${esc(cmp.metric)} on validation${delta < 0 ? " — an alias moves to it only with force" : ""}. Winning evaluation: ${esc(cmp.winner)}.</p>`;
  return `<h3>Against its members (${esc(cmp.metric)}, validation)</h3>${table(["module", cmp.metric, "mean attention"], rows, "", 'id="comparison"')}${verdict}`;
}

export async function adapterPage(id) {
  const a = await api(`/v1/adapters/${id}`);
  const members = a.members ? await Promise.all(a.members.map((m) => api(`/v1/adapters/${m}`).catch(() => ({id: m, name: m, version: "?"})))) : [];
  const names = Object.fromEntries(members.map((m) => [m.id, `${m.name} v${m.version}`]));
  const layers = (a.metrics || {}).attention_per_layer;
  const numbers = Object.entries(a.metrics || {}).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
  view().innerHTML = `<h2>${esc(a.name)} v${a.version} <small>(${esc(a.kind)})</small></h2>
  <div class="card"><p>Status ${esc(a.status)}, ${a.param_count.toLocaleString()} parameters${numbers ? `; ${esc(numbers)}` : ""}.
    Download: <a href="#" class="dl" data-format="native">native</a></p>
    <h3>Lineage</h3><div id="lineage-box"></div>
    ${comparisonTable(a, names)}
    ${layers ? `<h3>Attention per layer</h3>${heatMap("heatmap", layers.members, layers.layers, names)}` : ""}
    ${a.sets.length ? `<h3>Sets</h3><ul>${a.sets.map((s) => `<li>${esc(s.kind)}: ${esc(s.name)}</li>`).join("")}</ul>` : ""}
    <details><summary>All metrics</summary><pre>${esc(JSON.stringify(a.metrics, null, 2))}</pre></details></div>`;
  $("#lineage-box").innerHTML = await adapterLineage(api, a);
  $(".dl").addEventListener("click", async (ev) => {
    ev.preventDefault();
    try {
      const r = await fetch(`/v1/adapters/${a.id}/download`, {headers: {Authorization: "Bearer " + key()}});
      if (!r.ok) throw new Error(`download failed: ${r.status}`);
      const url = URL.createObjectURL(await r.blob());
      Object.assign(document.createElement("a"), {href: url, download: `${a.name}-v${a.version}.zip`}).click();
    } catch (e) { showError(e.message); }
  });
}
