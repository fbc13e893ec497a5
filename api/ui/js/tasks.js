// Tasks and their data: create a task; upload train/validation files (picker or drag and drop), list and
// delete datasets. The API validates every row; a bad row comes back with its line and nothing is stored.
import {$, ApiError, api, esc, showError, table, view} from "./core.js";
import {sourcesCard, wireSources} from "./sources.js";

const METRICS = {classification: ["accuracy", "macro_f1", "mcc"], regression: ["pearson", "spearman"]};

export async function tasksPage() {
  const tasks = await api("/v1/tasks");
  view().innerHTML = `<h2>Tasks</h2><div id="tasks">${table(["task", "kind", "labels", "metric"], tasks.map((t) => [
    `<a href="#/tasks/${encodeURIComponent(t.name)}">${esc(t.name)}</a>`, esc(t.kind), esc(t.labels.join(", ")), esc(t.metric)]),
  "No tasks yet. Create one below.")}</div>
  <form id="task-form" class="card" aria-labelledby="task-form-title">
    <h3 id="task-form-title">Create a task</h3>
    <p><label for="task-name">Name</label> <input id="task-name" name="name" required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]*" placeholder="sentiment"></p>
    <p><label for="task-kind">Kind</label> <select id="task-kind"><option value="classification">classification</option><option value="regression">regression</option></select></p>
    <p><label for="task-labels">Labels (comma-separated)</label> <input id="task-labels" placeholder="neg,pos"></p>
    <p><label for="task-metric">Metric</label> <select id="task-metric"></select></p>
    <button id="task-create" type="submit">Create task</button>
  </form>`;
  const metrics = () => { $("#task-metric").innerHTML = METRICS[$("#task-kind").value].map((m) => `<option>${m}</option>`).join(""); };
  metrics();
  $("#task-kind").addEventListener("change", metrics);
  $("#task-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const labels = $("#task-labels").value.split(",").map((s) => s.trim()).filter(Boolean);
    const body = {name: $("#task-name").value.trim(), kind: $("#task-kind").value, labels, metric: $("#task-metric").value};
    try {
      const t = await api("/v1/tasks", {method: "POST", body});
      showError("");
      location.hash = `#/tasks/${encodeURIComponent(t.name)}`;
    } catch (e) { showError(e.message); }
  });
}

export async function taskPage(name) {
  const t = await api(`/v1/tasks/${encodeURIComponent(name)}`);
  view().innerHTML = `<h2>Task ${esc(t.name)} <small>(${esc(t.kind)}${t.labels.length ? ": " + esc(t.labels.join(", ")) : ""}; ${esc(t.metric)})</small></h2>
  <p><a href="#/train?task=${encodeURIComponent(t.name)}" id="train-link">Train on this task</a></p>
  <form id="upload-form" class="card" aria-labelledby="upload-title">
    <h3 id="upload-title">Upload data</h3>
    <p>JSONL or CSV with <code>text</code>, optional <code>text_pair</code>, and <code>label</code>. Every row is checked; a file with a bad row is refused whole.</p>
    <p><label for="upload-split">Split</label> <select id="upload-split"><option>train</option><option>validation</option><option>test</option></select></p>
    <div id="drop" class="drop" aria-describedby="drop-help"><label for="upload-file">Choose a file, or drop one here</label>
      <input id="upload-file" type="file" accept=".jsonl,.csv,.json,text/csv,application/jsonl"><p id="drop-help" class="hint">The upload starts when a file is chosen or dropped.</p></div>
    <div id="upload-result" role="status" aria-live="polite"></div>
  </form>
  <h3>Datasets</h3><div id="datasets"></div><button id="more" type="button" hidden>More</button>
  ${sourcesCard()}`;
  wireSources(t.name);
  let cursor = null;
  const rows = [];
  const render = () => {
    $("#datasets").innerHTML = table(["dataset", "split", "rows", "labels", "uploaded", ""], rows.map((d) => [
      `<code>${esc(d.id)}</code>`, esc(d.split), d.row_count, esc(Object.entries(d.label_histogram || {}).map(([k, v]) => `${k} ${v}`).join(", ")),
      esc(d.created_at.slice(0, 19).replace("T", " ")), `<button type="button" class="delete" data-id="${esc(d.id)}" aria-label="Delete dataset ${esc(d.id)}">Delete</button>`]),
    "No datasets yet. Upload a train file, and a validation file for model selection.", 'id="datasets-table"');
  };
  const load = async (reset) => {
    if (reset) { rows.length = 0; cursor = null; }
    const page = await api(`/v1/tasks/${encodeURIComponent(name)}/datasets?limit=20${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`);
    rows.push(...page.items);
    cursor = page.next_cursor;
    $("#more").hidden = !cursor;
    render();
  };
  $("#more").addEventListener("click", () => load(false).catch((e) => showError(e.message)));
  $("#datasets").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.delete");
    if (!b) return;
    try { await api(`/v1/datasets/${b.dataset.id}`, {method: "DELETE"}); showError(""); await load(true); }
    catch (e) { showError(e.message); }
  });
  const upload = async (file) => {
    const out = $("#upload-result");
    out.innerHTML = `<p>Uploading ${esc(file.name)}…</p>`;
    const form = new FormData();
    form.append("split", $("#upload-split").value);
    form.append("file", file, file.name);
    try {
      const d = await api(`/v1/tasks/${encodeURIComponent(name)}/datasets`, {method: "POST", body: form});
      out.innerHTML = `<p class="ok" id="upload-ok">${esc(file.name)}: ${d.row_count} ${esc(d.split)} rows stored as <code>${esc(d.id)}</code>${d.deduplicated ? " (the same file was already stored)" : ""}.</p>`;
      showError("");
      await load(true);
    } catch (e) {
      const b = e instanceof ApiError ? e.body : {};
      const where = b && b.line ? `line ${b.line}: ` : "";
      out.innerHTML = `<p class="error" id="upload-error">${esc(file.name)} was not stored. ${esc(where)}${esc((b && b.detail) || e.message)}</p>`;
    }
    $("#upload-file").value = "";
  };
  $("#upload-file").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); });
  const drop = $("#drop");
  const over = (on) => (ev) => { ev.preventDefault(); drop.classList.toggle("over", on); };
  drop.addEventListener("dragover", over(true));
  drop.addEventListener("dragleave", over(false));
  drop.addEventListener("drop", (ev) => { over(false)(ev); const f = ev.dataTransfer.files[0]; if (f) upload(f); });
  await load(true);
}
