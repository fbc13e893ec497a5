// A task's ranking of registry sources (POST /v1/tasks/{task}/recommendations), with a button for each
// use: warm-start an ST-A from the top source, fuse the top 3 after the task's own adapter, merge the top 3.
import {$, api, esc, fmt, newKey, showError, table} from "./core.js";

export function sourcesCard() {
  return `<section id="sources" class="card" aria-labelledby="sources-title">
    <h3 id="sources-title">Sources from the registry</h3>
    <p class="hint">Which adapters help this task? Ranked on its training rows only.</p>
    <p><label for="rank-estimator">Estimator</label> <select id="rank-estimator">
      <option value="logme">LogME (features of each adapter)</option><option value="semb">SEmb (dataset embeddings)</option>
      <option value="fusion_probe">fusion-attention probe</option></select>
      <button id="rank-run" type="button">Rank sources</button></p>
    <div id="rank-result" role="status" aria-live="polite"></div>
    <p id="rank-uses" hidden>
      <button id="use-warm" type="button">Train an ST-A from the top source</button>
      <button id="use-fuse" type="button">Fuse the top 3</button>
      <button id="use-merge" type="button">Merge the top 3</button></p>
    <div id="use-result" role="status" aria-live="polite"></div>
  </section>`;
}

async function newest(task, split) {
  const page = await api(`/v1/tasks/${encodeURIComponent(task)}/datasets?split=${split}&limit=1`);
  return page.items[0] ? page.items[0].id : null;
}

export function wireSources(task) {
  let ranking = null;
  const estimator = () => $("#rank-estimator").value;
  $("#rank-run").addEventListener("click", async () => {
    $("#rank-result").innerHTML = `<p>Ranking…</p>`;
    $("#rank-uses").hidden = true;
    try {
      ranking = await api(`/v1/tasks/${encodeURIComponent(task)}/recommendations`, {method: "POST", body: {estimator: estimator()}});
      const rows = ranking.items.map((i) => [i.rank, `<a href="#/registry/${esc(i.adapter_id)}">${esc(i.name)}:${i.version}</a>`,
        esc(i.kind), esc(i.source_task), fmt(i.score)]);
      const base = ranking.baseline !== null ? ` The bare base scores ${fmt(ranking.baseline)}.` : "";
      $("#rank-result").innerHTML = `<p id="rank-summary">${ranking.items.length} sources by ${esc(ranking.estimator)} on ${ranking.rows_used} rows in ${ranking.seconds.toFixed(1)} s.${base}</p>` +
        (ranking.advice ? `<p class="error" id="rank-advice">${esc(ranking.advice)}</p>` : "") +
        table(["rank", "adapter", "kind", "source task", "score"], rows, "No sources.", 'id="rank-table"');
      $("#rank-uses").hidden = !ranking.items.length;
      showError("");
    } catch (e) { $("#rank-result").innerHTML = `<p class="error" id="rank-error">${esc(e.message)}</p>`; }
  });
  const use = (fn) => async () => {
    try {
      const out = await fn();
      $("#use-result").innerHTML = out;
      showError("");
    } catch (e) { $("#use-result").innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  };
  const jobLink = (j) => `<p class="ok">Submitted <a id="use-job" href="#/jobs/${esc(j.id)}">${esc(j.id)}</a>.</p>`;
  $("#use-warm").addEventListener("click", use(async () => {
    const train = await newest(task, "train");
    const body = {type: "adapter", task, base_model: ranking.base_model, train_dataset: train,
      validation_dataset: await newest(task, "validation"), warm_start: {from: ranking.items[0].adapter_id}};
    return jobLink(await api("/v1/jobs", {method: "POST", body, headers: {"Idempotency-Key": newKey()}}));
  }));
  $("#use-fuse").addEventListener("click", use(async () => {
    const body = {task, members: {auto: 3, estimator: estimator()}, base_model: ranking.base_model,
      train_dataset: await newest(task, "train"), validation_dataset: await newest(task, "validation")};
    return jobLink(await api("/v1/fusions", {method: "POST", body, headers: {"Idempotency-Key": newKey()}}));
  }));
  $("#use-merge").addEventListener("click", use(async () => {
    const row = await api("/v1/merges", {method: "POST", body: {members: {auto: 3, task, estimator: estimator()}}});
    return `<p class="ok">Merged into <a id="use-merged" href="#/registry/${esc(row.id)}">${esc(row.name)}</a>.</p>`;
  }));
}
