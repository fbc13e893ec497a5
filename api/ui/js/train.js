// The training form: a method (ST-A presets, LoRA, (IA)³, BitFit, MT-A, soft prompts), datasets picked from lists, and
// hyperparameters with the defaults the job would use (GET /v1/jobs/options). One idempotency key per form.
import {$, $$, api, datasetLabel, esc, newKey, options, showError, view} from "./core.js";

const HP_SHOWN = ["learning_rate", "epochs", "batch_size", "max_length", "patience", "seed"];

async function datasets(task, split) {
  return (await api(`/v1/tasks/${encodeURIComponent(task)}/datasets?split=${split}&limit=200`)).items;
}

const METHOD_LABELS = {lora: "LoRA", ia3: "(IA)³", bitfit: "BitFit", compacter: "Compacter", adalora: "AdaLoRA"};

function methods(opts) {
  const entries = Object.entries(opts.presets);
  const st = entries.filter(([, p]) => p.method === "bottleneck").map(([name]) => ({id: "preset:" + name, label: `ST-A (${name})`, type: "adapter"}));
  const other = entries.filter(([, p]) => p.method !== "bottleneck").map(([name, p]) => ({id: "preset:" + name, label: METHOD_LABELS[name] || METHOD_LABELS[p.method] || name, type: "adapter"}));
  return [...st, ...other,
    {id: "multitask", label: "MT-A (multi-task, base fine-tuned jointly)", type: "multitask"},
    {id: "prompts", label: "Soft prompts (an ensemble)", type: "prompts"}];
}

export async function trainPage(query) {
  const [tasks, bases, opts] = await Promise.all([api("/v1/tasks"), api("/v1/base-models"), api("/v1/jobs/options")]);
  if (!tasks.length) { view().innerHTML = `<h2>Train</h2><p class="empty">Create a task and upload its data first: <a href="#/tasks">Tasks</a>.</p>`; return; }
  const ms = methods(opts);
  const chosen = query.get("task") || tasks[0].name;
  view().innerHTML = `<h2>Train</h2><form id="train-form" class="card" aria-labelledby="train-title">
    <h3 id="train-title">A training job</h3>
    <p><label for="train-method">Method</label> <select id="train-method">${options(ms, (m) => m.id, (m) => m.label)}</select></p>
    <p id="method-doc" class="hint"></p>
    <p><label for="train-task">Task</label> <select id="train-task">${options(tasks, (t) => t.name, (t) => `${t.name} (${t.kind})`, chosen)}</select></p>
    <p><label for="train-base">Base model</label> <select id="train-base">${options(bases, (b) => b.id, (b) => `${b.name}${b.derived ? " (derived)" : ""} · ${b.num_layers} layers`)}</select></p>
    <p><label for="train-data">Train dataset</label> <select id="train-data" required></select></p>
    <p><label for="train-val">Validation dataset</label> <select id="train-val"></select></p>
    <fieldset id="mt-tasks" hidden><legend>Other tasks trained jointly (MT-A)</legend><div id="mt-list"></div></fieldset>
    <fieldset id="method-fields"><legend>Method settings</legend><div id="method-list"></div></fieldset>
    <fieldset><legend>Hyperparameters (defaults shown)</legend><div id="hp-list"></div></fieldset>
    <p><label for="train-name">Name (optional)</label> <input id="train-name" placeholder="defaults to the task's name"></p>
    <button id="train-submit" type="submit">Start training</button>
  </form>`;
  const form = $("#train-form");
  form.dataset.idempotencyKey = newKey();
  const method = () => ms.find((m) => m.id === $("#train-method").value);
  const fillData = async () => {
    const task = $("#train-task").value;
    const [tr, va] = await Promise.all([datasets(task, "train"), datasets(task, "validation")]);
    $("#train-data").innerHTML = tr.length ? options(tr, (d) => d.id, datasetLabel) : `<option value="">no train dataset: upload one</option>`;
    $("#train-val").innerHTML = `<option value="">none</option>` + options(va, (d) => d.id, datasetLabel, va[0] && va[0].id);
  };
  const fillMethod = async () => {
    const m = method();
    const spec = opts.job_types[m.type];
    $("#method-doc").textContent = spec.doc;
    const field = (id, label, value, step = "any") => `<p><label for="${id}">${esc(label)}</label> <input id="${id}" type="number" step="${step}" value="${esc(value)}"></p>`;
    let html = "";
    if (m.id.startsWith("preset:")) {
      const cfg = opts.presets[m.id.slice(7)].config;
      html = m.id === "preset:lora" ? field("m-r", "rank r", cfg.r, 1) + field("m-alpha", "alpha", cfg.alpha)
        : cfg.reduction_factor !== undefined ? field("m-rf", "reduction factor", cfg.reduction_factor, 1) : "";
    } else if (m.type === "multitask") {
      html = field("m-blr", "base learning rate", spec.fields.base_learning_rate) + field("m-alpha-s", "sampling alpha (∝ size^alpha)", 0.5);
    } else {
      html = field("m-k", "prompts (k)", spec.fields.k, 1) + field("m-len", "prompt length", spec.fields.prompt.length, 1) +
        `<p><label for="m-voting">Voting</label> <select id="m-voting">${["majority", "weighted", "mean_prob", "mean_logit"].map((v) => `<option${v === spec.fields.voting ? " selected" : ""}>${v}</option>`).join("")}</select></p>`;
    }
    $("#method-list").innerHTML = html;
    const hps = m.id.startsWith("preset:") ? opts.presets[m.id.slice(7)].hyperparameters : spec.hyperparameters;
    $("#hp-list").innerHTML = HP_SHOWN.map((k) => field("hp-" + k, k.replace(/_/g, " "), hps[k], k === "learning_rate" ? "any" : 1)).join("");
    $("#mt-tasks").hidden = m.type !== "multitask";
    if (m.type === "multitask") {
      const others = tasks.filter((t) => t.name !== $("#train-task").value);
      const lists = await Promise.all(others.map(async (t) => [t, await datasets(t.name, "train"), await datasets(t.name, "validation")]));
      $("#mt-list").innerHTML = lists.map(([t, tr, va], i) => `<p><input type="checkbox" id="mt-${i}" class="mt-pick" value="${esc(t.name)}"${tr.length ? "" : " disabled"}> <label for="mt-${i}">${esc(t.name)}</label>
        <label for="mt-${i}-train">train</label> <select id="mt-${i}-train">${options(tr, (d) => d.id, datasetLabel)}</select>
        <label for="mt-${i}-val">validation</label> <select id="mt-${i}-val"><option value="">none</option>${options(va, (d) => d.id, datasetLabel)}</select></p>`).join("") || `<p class="empty">No other task: MT-A needs two or more.</p>`;
    }
  };
  const num = (id) => Number($(id).value);
  const body = () => {
    const m = method();
    const hp = Object.fromEntries(HP_SHOWN.map((k) => [k, num("#hp-" + k)]));
    const own = {task: $("#train-task").value, train_dataset: $("#train-data").value, validation_dataset: $("#train-val").value || null};
    const b = {type: m.type, base_model: $("#train-base").value, hyperparameters: hp};
    if ($("#train-name").value.trim()) b.name = $("#train-name").value.trim();
    if (m.id.startsWith("preset:")) {
      b.preset = m.id.slice(7);
      b.adapter = m.id === "preset:lora" ? {r: num("#m-r"), alpha: num("#m-alpha")} : $("#m-rf") ? {reduction_factor: num("#m-rf")} : {};
      return Object.assign(b, own);
    }
    if (m.type === "multitask") {
      const picked = $$(".mt-pick:checked").map((c) => {
        const i = c.id.slice(3);
        return {task: c.value, train_dataset: $(`#mt-${i}-train`).value, validation_dataset: $(`#mt-${i}-val`).value || null};
      });
      return Object.assign(b, {tasks: [own, ...picked], base_learning_rate: num("#m-blr"), alpha: num("#m-alpha-s")});
    }
    return Object.assign(b, own, {k: num("#m-k"), prompt: {length: num("#m-len")}, voting: $("#m-voting").value});
  };
  $("#train-method").addEventListener("change", () => fillMethod().catch((e) => showError(e.message)));
  $("#train-task").addEventListener("change", () => Promise.all([fillData(), fillMethod()]).catch((e) => showError(e.message)));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = $("#train-submit");
    button.disabled = true;
    try {
      const job = await api("/v1/jobs", {method: "POST", body: body(), headers: {"Idempotency-Key": form.dataset.idempotencyKey}});
      showError("");
      location.hash = `#/jobs/${job.id}`;
    } catch (e) { showError(e.message); button.disabled = false; }
  });
  await Promise.all([fillData(), fillMethod()]);
}
