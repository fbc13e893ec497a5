// Jobs: the list, and a job's live page (progress, loss and validation curves with axes, the event
// timeline with requeues, resumes and cancel requests, checkpoints with their metrics, the result).
import {$, api, esc, fmt, onLeave, showError, table, view} from "./core.js";
import {lineChart} from "./charts.js";

const FINISHED = ["succeeded", "failed", "cancelled"];
const TYPES = ["adapter", "multitask", "fusion", "prompts", "evaluate"];

export async function jobsPage() {
  view().innerHTML = `<h2>Jobs</h2><p><a href="#/train">Train a new adapter</a></p><form id="job-filter">
    <label for="f-status">Status</label> <select id="f-status"><option value="">any</option>${[...["queued", "running"], ...FINISHED].map((s) => `<option>${s}</option>`).join("")}</select>
    <label for="f-type">Type</label> <select id="f-type"><option value="">any</option>${TYPES.map((s) => `<option>${s}</option>`).join("")}</select></form><div id="jobs-list">loading…</div>`;
  const load = async () => {
    const q = new URLSearchParams({limit: 100});
    if ($("#f-status").value) q.set("status", $("#f-status").value);
    if ($("#f-type").value) q.set("type", $("#f-type").value);
    const data = await api("/v1/jobs?" + q);
    $("#jobs-list").innerHTML = table(["job", "type", "status", "progress", "created"], data.items.map((j) => [
      `<a href="#/jobs/${esc(j.id)}">${esc(j.id)}</a>`, esc(j.type), `<span class="status ${esc(j.status)}">${esc(j.status)}</span>`,
      j.progress && j.progress.total ? `${j.progress.step}/${j.progress.total}` : "", esc(j.created_at.slice(0, 19).replace("T", " "))]),
    "No jobs yet. Start one from Train, with POST /v1/jobs, or with adapterctl.");
  };
  $("#job-filter").addEventListener("change", () => load().catch((e) => showError(e.message)));
  await load();
}

// one line of the timeline per event that says something (progress ticks are the charts)
function describe(e) {
  const p = e.payload || {};
  switch (e.type) {
    case "status": return `status → ${p.status}${p.worker ? " on " + p.worker : ""}${p.attempt ? ", attempt " + p.attempt : ""}${p.reason ? ": " + p.reason : ""}`;
    case "requeued": return `requeued (attempt ${p.attempts}): ${p.reason || ""}`;
    case "resumed": return `resumed from the checkpoint at step ${p.from_step} (attempt ${p.attempt})`;
    case "cancel_requested": return "cancel requested";
    case "checkpoint": return `checkpoint at step ${p.step} (${(p.size / 1024).toFixed(0)} KiB)`;
    case "metric": return `validation at step ${p.step ?? "—"}, epoch ${p.epoch ?? "—"}: ${Object.entries(p).filter(([k, v]) => !["step", "epoch"].includes(k) && typeof v === "number").map(([k, v]) => `${k} ${fmt(v)}`).join(", ")}`;
    case "lr_trial": {
      const m = Object.entries(p).find(([k, v]) => typeof v === "number" && !["learning_rate", "seconds", "steps"].includes(k));
      return `learning-rate trial ${p.learning_rate}: ${m ? `${m[0]} ${fmt(m[1])}` : "no score"}, kept ${p.winner}, ${p.seconds}s`;
    }
    case "error": return `error: ${p.message}`;
    case "enqueue_failed": return `could not reach the broker: ${p.message}`;
    case "derived_base": return `derived base ${p.identity}`;
    default: return e.type;
  }
}

const metricOf = (p) => Object.entries(p).find(([k, v]) => typeof v === "number" && !["step", "epoch", "loss"].includes(k));

export async function jobPage(id) {
  view().innerHTML = `<h2>Job <code>${esc(id)}</code> <small id="job-type"></small></h2>
  <div class="card"><p>Status: <span id="job-status" class="status"></span> <button id="cancel" type="button">Cancel</button></p>
    <div class="bar" role="progressbar" aria-label="Training progress" aria-valuemin="0" aria-valuemax="100" id="job-progress"><div id="job-bar" style="width:0%"></div></div><p id="job-step"></p>
    <p id="job-adapter"></p></div>
  <div class="charts"><div id="loss-chart" class="chart"></div><div id="metric-chart" class="chart"></div></div>
  <div id="job-error"></div>
  <h3>Timeline</h3><ol id="timeline" class="timeline"></ol>
  <h3>Checkpoints</h3><div id="ckpts"></div>
  <h3>Result</h3><pre id="job-result"></pre>`;
  const lossChart = lineChart($("#loss-chart"), {title: "Training loss", x: "step", y: "loss (nats; MSE for regression)"});
  const metricChart = lineChart($("#metric-chart"), {title: "Validation", x: "step", y: "validation metric", color: "#17813b"});
  const loss = [], metric = [];
  let seq = 0, done = false, metricName = null;
  const draw = (job) => {
    $("#job-type").textContent = `(${job.type})`;
    $("#job-status").textContent = job.status;
    $("#job-status").className = "status " + job.status;
    const p = job.progress || {};
    const pct = job.status === "succeeded" ? 100 : p.total ? (100 * p.step) / p.total : 0;
    $("#job-bar").style.width = pct.toFixed(1) + "%";
    $("#job-progress").setAttribute("aria-valuenow", pct.toFixed(0));
    if (p.total) $("#job-step").textContent = `step ${p.step} of ${p.total}, epoch ${p.epoch ?? 0}${p.loss !== undefined ? `, loss ${fmt(p.loss)}` : ""}`;
    const r = job.result || {};
    if (r.adapter_id) $("#job-adapter").innerHTML = `Registered <a id="result-adapter" href="#/registry/${esc(r.adapter_id)}">${esc(r.adapter_id)}</a>${r.ensemble_id ? `, ensemble <a href="#/ensembles">${esc(r.ensemble_id)}</a>` : ""}`;
    $("#job-result").textContent = job.result ? JSON.stringify(job.result, null, 2) : "";
    $("#cancel").disabled = FINISHED.includes(job.status);
  };
  $("#cancel").addEventListener("click", async () => {
    try { draw(await api(`/v1/jobs/${id}/cancel`, {method: "POST"})); } catch (e) { showError(e.message); }
  });
  const tick = async () => {
    // the job before its events: a status and its event are written together, so events read after the job
    // hold its last status change; the other way round, a job that finished between the two reads stopped
    // the polling with its final events unread
    const job = await api(`/v1/jobs/${id}`);
    const ev = await api(`/v1/jobs/${id}/events?after=${seq}`);
    const lines = [];
    for (const e of ev.items) {
      seq = e.seq;
      const p = e.payload || {};
      if (e.type === "progress" && p.loss !== undefined) loss.push([p.step, p.loss]);
      if (e.type === "metric" && p.step !== undefined) {
        const m = metricOf(p);
        if (m) {
          if (!metricName) { metricName = m[0]; metricChart.setY(`validation ${metricName}`); }
          metric.push([p.step, p[metricName] ?? m[1]]);
        }
      }
      if (e.type === "error") $("#job-error").innerHTML = `<h3>Error</h3><div class="error">${esc(p.message)}</div><pre id="traceback">${esc(p.traceback)}</pre>`;
      if (e.type !== "progress") lines.push(`<li class="ev ev-${esc(e.type)}"><time>${esc(e.created_at.slice(11, 19))}</time> ${esc(describe(e))}</li>`);
    }
    $("#timeline").insertAdjacentHTML("beforeend", lines.join(""));
    lossChart.update(loss);
    if (metricName) $("#metric-chart").dataset.metric = metricName;
    metricChart.update(metric);
    draw(job);
    const cks = await api(`/v1/jobs/${id}/checkpoints`);
    $("#ckpts").innerHTML = table(["step", "attempt", "size", "validation metrics", "saved"], cks.map((c) => [
      c.step, c.attempt, `${(c.size / 1024).toFixed(0)} KiB`,
      esc(c.metrics ? Object.entries(c.metrics).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${fmt(v)}`).join(", ") : "none yet"),
      esc(c.created_at.slice(0, 19).replace("T", " "))]), "No checkpoints yet.", 'id="ckpt-table"');
    done = FINISHED.includes(job.status);
  };
  await tick();
  const t = setInterval(() => { if (!done) tick().catch((e) => showError(e.message)); }, 1000);
  onLeave(() => clearInterval(t));
}
