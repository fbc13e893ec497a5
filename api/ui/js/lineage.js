// An adapter's lineage as a small graph: (parent base →) base → members → fusion, and job → adapter.
import {esc} from "./core.js";

const W = 190, H = 42, GAP_X = 70, GAP_Y = 18;

function node(n, x, y) {
  const label = n.label.length > 24 ? n.label.slice(0, 23) + "…" : n.label;
  const box = `<rect x="${x}" y="${y}" width="${W}" height="${H}" rx="6" class="node node-${esc(n.kind)}"/>` +
    `<text x="${x + 8}" y="${y + 17}" class="node-kind">${esc(n.kind)}</text><text x="${x + 8}" y="${y + 34}">${esc(label)}</text>`;
  return n.href ? `<a href="${esc(n.href)}" class="lineage-node" data-id="${esc(n.id)}">${box}</a>` :
    `<g class="lineage-node" data-id="${esc(n.id)}">${box}</g>`;
}

// columns: a list of lists of nodes {id, kind, label, href}; edges: [fromId, toId]
export function lineageGraph(columns, edges) {
  const pos = {};
  const tallest = Math.max(...columns.map((c) => c.length));
  const height = tallest * (H + GAP_Y) + GAP_Y;
  const width = columns.length * (W + GAP_X);
  let out = "";
  columns.forEach((col, i) => {
    const top = (height - col.length * (H + GAP_Y)) / 2 + GAP_Y / 2;
    col.forEach((n, j) => {
      const x = 4 + i * (W + GAP_X), y = top + j * (H + GAP_Y);
      pos[n.id] = [x, y];
      out += node(n, x, y);
    });
  });
  const lines = edges.filter(([a, b]) => pos[a] && pos[b]).map(([a, b]) => {
    const [x1, y1] = pos[a], [x2, y2] = pos[b];
    const from = x1 < x2 ? [x1 + W, y1 + H / 2] : [x1 + W / 2, y1];
    const to = x1 < x2 ? [x2 - 2, y2 + H / 2] : [x2 + W / 2, y2 + H + 2];
    return `<line x1="${from[0]}" y1="${from[1]}" x2="${to[0]}" y2="${to[1]}" class="edge" marker-end="url(#arrow)" data-edge="${esc(a)}>${esc(b)}"/>`;
  }).join("");
  return `<svg id="lineage" class="lineage" width="${width}" height="${height + 10}" role="group" aria-label="Lineage">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>
    ${lines}${out}</svg>`;
}

// the nodes and edges of one adapter: its base (and the base's parent when derived), its members, its job
export async function adapterLineage(api, a) {
  const base = await api(`/v1/base-models/${a.base_model_id}`).catch(() => null);
  const bases = [];
  if (base && base.parent_id) {
    const parent = await api(`/v1/base-models/${base.parent_id}`).catch(() => null);
    if (parent) bases.push({id: parent.id, kind: "base", label: parent.name});
  }
  if (base) bases.push({id: base.id, kind: base.derived ? "derived base" : "base", label: base.name});
  const edges = [];
  if (bases.length === 2) edges.push([bases[0].id, bases[1].id]);
  const me = {id: a.id, kind: a.kind, label: `${a.name} v${a.version}`};
  const columns = [bases];
  if (a.members && a.members.length) {
    const members = await Promise.all(a.members.map((m) => api(`/v1/adapters/${m}`).catch(() => ({id: m, kind: "adapter", name: m, version: "?", base_model_id: null}))));
    columns.push(members.map((m) => ({id: m.id, kind: m.kind, label: `${m.name} v${m.version}`, href: `#/registry/${m.id}`})));
    members.forEach((m) => { edges.push([m.base_model_id, m.id]); edges.push([m.id, a.id]); });
  } else if (base) {
    edges.push([base.id, a.id]);
  }
  const last = [me];
  if (a.job_id) {
    last.push({id: a.job_id, kind: "job", label: a.job_id, href: `#/jobs/${a.job_id}`});
    edges.push([a.job_id, a.id]);
  }
  columns.push(last);
  return lineageGraph(columns, edges);
}
