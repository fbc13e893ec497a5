// Try a module: one text through an adapter, LoRA or fusion (with its attention per layer) or an ensemble.
import {$, allPages, api, esc, showError, table, view} from "./core.js";
import {heatMap} from "./charts.js";

export async function tryPage() {
  const [adapters, ensembles] = await Promise.all([allPages("/v1/adapters?status=ready"), api("/v1/ensembles")]);
  const opts = adapters.filter((a) => a.kind !== "soft_prompt").map((a) => `<option value="adapter:${esc(a.id)}">${esc(a.kind)} · ${esc(a.name)} v${a.version}</option>`)
    .concat(ensembles.map((e) => `<option value="ensemble:${esc(e.id)}">ensemble · ${esc(e.name)}</option>`));
  view().innerHTML = `<h2>Try it</h2><form id="try-form" class="card"><p><label for="try-target">Module</label> <select id="try-target">${opts.join("")}</select></p>
    <p><label for="try-text">Text</label><br><textarea id="try-text" rows="3" cols="70" placeholder="Type a text"></textarea></p>
    <button id="try-run" type="submit">Predict</button></form><div id="try-out" aria-live="polite"></div>`;
  if (!opts.length) $("#try-out").innerHTML = `<p class="empty">Nothing to try yet: train an adapter or prompts first.</p>`;
  $("#try-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const [kind, id] = $("#try-target").value.split(":");
    const inputs = [{text: $("#try-text").value || " "}];
    try {
      if (kind === "ensemble") {
        const o = (await api(`/v1/ensembles/${id}/predict`, {method: "POST", body: {inputs}})).outputs[0];
        $("#try-out").innerHTML = `<div class="card"><p>Label <b id="try-label">${esc(o.label)}</b>, agreement ${(100 * o.agreement).toFixed(0)}%${o.tie_break ? " (tie broken by mean probability)" : ""}</p>${table(["prompt", "vote", "probability"], o.per_prompt.map((p) => [esc(p.prompt), p.skipped ? "skipped" : esc(p.label), p.skipped ? "" : p.probability.toFixed(3)]), "")}</div>`;
      } else {
        const o = (await api("/v1/predict", {method: "POST", body: {adapter: id, inputs, return_fusion_attention: true}})).outputs[0];
        let html = `<div class="card"><p>Label <b id="try-label">${esc(o.label ?? o.value)}</b></p>${o.probabilities ? table(["label", "probability"], Object.entries(o.probabilities).map(([k, v]) => [esc(k), v.toFixed(3)]), "") : ""}`;
        if (o.fusion_attention) {
          const fa = o.fusion_attention;
          html += `<h3>Fusion attention for this text (top adapter: ${esc(fa.top_adapter)})</h3>${heatMap("try-heatmap", fa.adapters, fa.layers)}`;
        }
        $("#try-out").innerHTML = html + "</div>";
      }
      showError("");
    } catch (e) { showError(e.message); }
  });
}
