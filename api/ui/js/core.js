// Shared helpers: the API call (key from sessionStorage), escaping, tables, errors, page timers.
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
export const view = () => $("#view");
const ESC = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESC[c]);
export const fmt = (v, d = 4) => (typeof v === "number" ? v.toFixed(d) : "—");

// intervals and event sources of the current page; the router clears them on every navigation
const cleanups = [];
export function onLeave(fn) { cleanups.push(fn); }
export function leavePage() { while (cleanups.length) cleanups.pop()(); }

export function showError(msg) {
  const e = $("#error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

export const key = () => sessionStorage.getItem("composer-key");
let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

export class ApiError extends Error {
  constructor(status, body) {
    const detail = typeof body === "object" ? body.detail || "" : String(body);
    const where = body && body.line ? ` (line ${body.line})` : "";
    super(`${(body && body.title) || status}: ${detail}${where}`);
    this.status = status;
    this.body = body;
  }
}

// JSON in and out; a FormData body goes as multipart. 401 forgets the key and asks for one again.
export async function api(path, opts = {}) {
  const json = opts.body !== undefined && !(opts.body instanceof FormData);
  const headers = Object.assign({Authorization: "Bearer " + key()}, json ? {"Content-Type": "application/json"} : {}, opts.headers || {});
  const init = Object.assign({}, opts, {headers, body: json ? JSON.stringify(opts.body) : opts.body});
  let r;
  try { r = await fetch(path, init); } catch (e) { throw new Error("The request failed: " + e.message); }
  if (r.status === 401) {
    sessionStorage.removeItem("composer-key");
    unauthorized();
    throw new Error("Your key is unknown, revoked or expired. Enter a valid key.");
  }
  if (r.status === 204) return null;
  const body = (r.headers.get("content-type") || "").includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

// every page of a paged list (items + next_cursor)
export async function allPages(path, limit = 200) {
  const out = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=${limit}${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`);
    out.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

export function table(cols, rows, empty, attrs = "") {
  if (!rows.length) return `<p class="empty">${esc(empty)}</p>`;
  const head = cols.map((c) => `<th scope="col">${esc(c)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("");
  return `<table ${attrs}><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

export function options(items, value, label, selected) {
  return items.map((it) => `<option value="${esc(value(it))}"${value(it) === selected ? " selected" : ""}>${esc(label(it))}</option>`).join("");
}

// a random idempotency key, made once per form: a double submit makes one job
export function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return "ui-" + [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

export const datasetLabel = (d) => `${d.split} · ${d.row_count} rows · ${d.id} · ${d.created_at.slice(0, 16).replace("T", " ")}`;
