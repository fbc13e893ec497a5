// Prompt ensembles: create one from a task's soft prompts with a voting rule, and query it: each
// input's label, agreement, every prompt's vote, and whether early exit decided it.
import {$, $$, allPages, api, esc, options, showError, table, view} from "./core.js";

const VOTING = ["majority", "weighted", "mean_prob", "mean_logit"];

export async function ensemblesPage() {
  const [ensembles, tasks, prompts] = await Promise.all([api("/v1/ensembles"), api("/v1/tasks"), allPages("/v1/adapters?kind=soft_prompt&status=ready")]);
  const taskName = Object.fromEntries(tasks.map((t) => [t.id, t.name]));
  const classification = tasks.filter((t) => t.kind === "classification");
  view().innerHTML = `<h2>Ensembles</h2><div id="ensembles">${table(["ensemble", "task", "voting", "prompts"], ensembles.map((e) => [
    esc(e.name), esc(taskName[e.task_id] || e.task_id), esc(e.voting), e.prompts.length]), "No ensembles yet. A prompts job makes one; or compose one below.", 'id="ensembles-table"')}</div>
  <form id="ens-form" class="card" aria-labelledby="ens-title"><h3 id="ens-title">Create an ensemble</h3>
    <p><label for="ens-name">Name</label> <input id="ens-name" required placeholder="sentiment-vote"></p>
    <p><label for="ens-task">Task</label> <select id="ens-task">${options(classification, (t) => t.name, (t) => t.name)}</select></p>
    <fieldset><legend>Soft prompts</legend><div id="ens-prompts"></div></fieldset>
    <p><label for="ens-voting">Voting</label> <select id="ens-voting">${VOTING.map((s) => `<option>${s}</option>`).join("")}</select></p>
    <button id="ens-create" type="submit">Create ensemble</button><p id="ens-created" role="status"></p></form>
  <form id="ensq-form" class="card" aria-labelledby="ensq-title"><h3 id="ensq-title">Query an ensemble</h3>
    <p><label for="ensq-target">Ensemble</label> <select id="ensq-target">${options(ensembles, (e) => e.id, (e) => `${e.name} (${e.voting})`)}</select></p>
    <p><label for="ensq-text">Inputs, one per line</label><br><textarea id="ensq-text" rows="4" cols="70"></textarea></p>
    <p><label for="ensq-voting">Voting</label> <select id="ensq-voting"><option value="">the ensemble's own</option>${VOTING.map((s) => `<option>${s}</option>`).join("")}</select>
      <input type="checkbox" id="ensq-early"> <label for="ensq-early">Early exit (majority voting: stop once the other prompts cannot change the vote)</label></p>
    <button id="ensq-run" type="submit">Query</button></form><div id="ensq-out" aria-live="polite"></div>`;
  const fill = () => {
    const t = tasks.find((x) => x.name === $("#ens-task").value);
    const mine = prompts.filter((p) => t && p.task_id === t.id);
    $("#ens-prompts").innerHTML = mine.map((p, i) => `<p><input type="checkbox" class="ens-pick" id="ens-p${i}" value="${esc(p.id)}" checked> <label for="ens-p${i}">${esc(p.name)} v${p.version}${typeof p.metrics.accuracy === "number" ? ` (accuracy ${p.metrics.accuracy.toFixed(3)})` : ""}</label></p>`).join("") ||
      `<p class="empty">No soft prompts for this task: train some with the Soft prompts method.</p>`;
  };
  fill();
  $("#ens-task").addEventListener("change", fill);
  $("#ens-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {name: $("#ens-name").value.trim(), task: $("#ens-task").value, prompts: $$(".ens-pick:checked").map((c) => c.value), voting: $("#ens-voting").value};
    try {
      const e = await api("/v1/ensembles", {method: "POST", body});
      showError("");
      $("#ensq-target").insertAdjacentHTML("afterbegin", `<option value="${esc(e.id)}" selected>${esc(e.name)} (${esc(e.voting)})</option>`);
      $("#ensq-target").value = e.id;
      $("#ens-created").innerHTML = `Ensemble <strong id="ens-new">${esc(e.name)}</strong> of ${e.prompts.length} prompts created; query it below.`;
    } catch (err) { showError(err.message); }
  });
  $("#ensq-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const inputs = $("#ensq-text").value.split("\n").map((s) => s.trim()).filter(Boolean).map((text) => ({text}));
    if (!inputs.length) { showError("Type at least one input."); return; }
    const body = {inputs, early_exit: $("#ensq-early").checked};
    if ($("#ensq-voting").value) body.voting = $("#ensq-voting").value;
    try {
      const r = await api(`/v1/ensembles/${$("#ensq-target").value}/predict`, {method: "POST", body});
      showError("");
      const ids = r.outputs[0].per_prompt.map((p) => p.prompt);
      const names = Object.fromEntries(prompts.map((p) => [p.id, p.name]));
      $("#ensq-out").innerHTML = `<p>Voting <strong>${esc(r.voting)}</strong>.</p>` + table(
        ["input", "label", "agreement", "decided", ...ids.map((id) => names[id] || id)],
        r.outputs.map((o, i) => [esc(inputs[i].text), `<strong class="ens-label">${esc(o.label)}</strong>`, `${(100 * o.agreement).toFixed(0)}%`,
          o.early_exit ? `<span class="early">early exit</span>` : "all prompts",
          ...o.per_prompt.map((p) => (p.skipped ? `<span class="skipped">skipped</span>` : `${esc(p.label)} (${p.probability.toFixed(2)})`))]),
        "", 'id="ensq-table"');
    } catch (err) { showError(err.message); }
  });
}
