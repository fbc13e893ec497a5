// Try a module: one text through an adapter, LoRA, fusion (with its attention per layer), saved composition or
// an ensemble; or build a composition tree (stack, average, parallel over adapters and fusions), try it and save it.
import {$, $$, allPages, api, esc, showError, table, view} from "./core.js";
import {heatMap} from "./charts.js";

const MEMBERS = ["st_a", "mt_a", "fusion"]; // what a tree holds: bottleneck adapters, and fusions inside a stack

function outputCard(o, i = 0) {
  let html = `<div class="card"><p>Label <b${i ? "" : ' id="try-label"'}>${esc(o.label ?? o.value)}</b>${o.head ? ` (head ${esc(o.head)})` : ""}</p>${o.probabilities ? table(["label", "probability"], Object.entries(o.probabilities).map(([k, v]) => [esc(k), v.toFixed(3)]), "") : ""}`;
  if (o.fusion_attention) {
    const fa = o.fusion_attention;
    html += `<h3>Fusion attention for this text (top adapter: ${esc(fa.top_adapter)})</h3>${heatMap("try-heatmap", fa.adapters, fa.layers)}`;
  }
  return html + "</div>";
}

// the tree the builder's fields describe: one block over the ticked members, in the order ticked
let picked = [];
function built(kinds) {
  const block = $("#tree-block").value;
  const members = picked.map((id) => (kinds[id] === "fusion" ? {fuse: id} : id));
  const tree = {[block]: members};
  const weights = $("#tree-weights").value.trim();
  if (block === "average" && weights) tree.weights = weights.split(",").map(Number);
  if (block !== "parallel" && $("#tree-head").value) tree.head = $("#tree-head").value;
  return tree;
}

export async function tryPage() {
  const [adapters, ensembles] = await Promise.all([allPages("/v1/adapters?status=ready"), api("/v1/ensembles")]);
  const opts = adapters.filter((a) => a.kind !== "soft_prompt").map((a) => `<option value="adapter:${esc(a.id)}">${esc(a.kind)} · ${esc(a.name)} v${a.version}</option>`)
    .concat(ensembles.map((e) => `<option value="ensemble:${esc(e.id)}">ensemble · ${esc(e.name)}</option>`));
  const members = adapters.filter((a) => MEMBERS.includes(a.kind));
  const kinds = Object.fromEntries(members.map((a) => [a.id, a.kind]));
  const label = Object.fromEntries(members.map((a) => [a.id, `${a.kind} · ${a.name} v${a.version}`]));
  picked = [];
  view().innerHTML = `<h2>Try it</h2><form id="try-form" class="card"><p><label for="try-target">Module</label> <select id="try-target">${opts.join("")}</select></p>
    <p><label for="try-text">Text</label><br><textarea id="try-text" rows="3" cols="70" placeholder="Type a text"></textarea></p>
    <button id="try-run" type="submit">Predict</button></form>
    <form id="tree-form" class="card"><h3>Compose a tree</h3>
    <p><label for="tree-block">Block</label> <select id="tree-block"><option value="stack">stack: members in order at every layer</option><option value="average">average: members' outputs mixed</option><option value="parallel">parallel: one answer per member</option></select></p>
    <fieldset><legend>Members, in the order you tick them</legend>${members.map((a) => `<p><input type="checkbox" class="tree-pick" id="tree-pick-${esc(a.id)}" value="${esc(a.id)}"> <label for="tree-pick-${esc(a.id)}">${esc(label[a.id])}</label></p>`).join("") || `<p class="empty">No adapters to compose yet.</p>`}</fieldset>
    <p><label for="tree-head">Head</label> <select id="tree-head"><option value="">the last member's</option></select>
    <label for="tree-weights">Weights (average)</label> <input id="tree-weights" size="12" placeholder="0.7, 0.3"></p>
    <p><label for="tree-json">Tree (edit it to nest blocks)</label><br><textarea id="tree-json" rows="3" cols="70"></textarea></p>
    <p><label for="tree-text">Text</label> <input id="tree-text" size="40" placeholder="Type a text">
    <button id="tree-run" type="submit">Predict with the tree</button></p>
    <p><label for="tree-name">Save as</label> <input id="tree-name" size="20" placeholder="a name"> <button id="tree-save" type="button">Save the composition</button></p></form>
    <div id="try-out" aria-live="polite"></div>`;
  if (!opts.length) $("#try-out").innerHTML = `<p class="empty">Nothing to try yet: train an adapter or prompts first.</p>`;
  const refresh = () => {
    const head = $("#tree-head").value;
    $("#tree-head").innerHTML = `<option value="">the last member's</option>` + picked.map((id) => `<option value="${esc(id)}"${id === head ? " selected" : ""}>${esc(label[id])}</option>`).join("");
    $("#tree-json").value = JSON.stringify(built(kinds));
  };
  $$(".tree-pick").forEach((box) => box.addEventListener("change", () => {
    picked = box.checked ? [...picked, box.value] : picked.filter((id) => id !== box.value);
    refresh();
  }));
  ["#tree-block", "#tree-head", "#tree-weights"].forEach((sel) => $(sel).addEventListener("change", refresh));
  const tree = () => {
    try { return JSON.parse($("#tree-json").value); } catch (e) { throw new Error("The tree is not JSON: " + e.message); }
  };
  $("#tree-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const body = await api("/v1/predict", {method: "POST", body: {composition: tree(), inputs: [{text: $("#tree-text").value || " "}]}});
      $("#try-out").innerHTML = body.branches
        ? body.branches.map((b, i) => outputCard({...b.outputs[0], head: b.head}, i)).join("")
        : outputCard({...body.outputs[0], head: body.head});
      showError("");
    } catch (e) { showError(e.message); }
  });
  $("#tree-save").addEventListener("click", async () => {
    try {
      const row = await api("/v1/compositions", {method: "POST", body: {name: $("#tree-name").value, composition: tree()}});
      $("#try-out").innerHTML = `<p class="card" id="tree-saved">Saved <a href="#/registry/${esc(row.id)}">${esc(row.name)} v${row.version}</a> (${esc(row.id)}).</p>`;
      showError("");
    } catch (e) { showError(e.message); }
  });
  $("#try-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const [kind, id] = $("#try-target").value.split(":");
    const inputs = [{text: $("#try-text").value || " "}];
    try {
      if (kind === "ensemble") {
        const o = (await api(`/v1/ensembles/${id}/predict`, {method: "POST", body: {inputs}})).outputs[0];
        $("#try-out").innerHTML = `<div class="card"><p>Label <b id="try-label">${esc(o.label)}</b>, agreement ${(100 * o.agreement).toFixed(0)}%${o.tie_break ? " (tie broken by mean probability)" : ""}</p>${table(["prompt", "vote", "probability"], o.per_prompt.map((p) => [esc(p.prompt), p.skipped ? "skipped" : esc(p.label), p.skipped ? "" : p.probability.toFixed(3)]), "")}</div>`;
      } else {
        const body = await api("/v1/predict", {method: "POST", body: {adapter: id, inputs, return_fusion_attention: true}});
        $("#try-out").innerHTML = body.branches
          ? body.branches.map((b, i) => outputCard({...b.outputs[0], head: b.head}, i)).join("")
          : outputCard(body.outputs[0]);
      }
      showError("");
    } catch (e) { showError(e.message); }
  });
}
