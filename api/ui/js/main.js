// The dashboard's router: plain ES modules, no build step. The key lives in sessionStorage only.
import {$, key, leavePage, onUnauthorized, showError, view} from "./core.js";
import {ensemblesPage} from "./ensembles.js";
import {jobPage, jobsPage} from "./jobs.js";
import {adapterPage, registryPage} from "./registry.js";
import {taskPage, tasksPage} from "./tasks.js";
import {trainPage} from "./train.js";
import {tryPage} from "./try.js";

const PAGES = {
  tasks: (id) => (id ? taskPage(decodeURIComponent(id)) : tasksPage()),
  train: (id, q) => trainPage(q),
  jobs: (id) => (id ? jobPage(id) : jobsPage()),
  registry: (id) => (id ? adapterPage(id) : registryPage()),
  ensembles: () => ensemblesPage(),
  try: () => tryPage(),
};

let navigation = 0;  // a page still loading when the user moves on must not touch the next one

async function route() {
  const nav = ++navigation;
  leavePage();
  const hasKey = !!key();
  $("#login").hidden = hasKey;
  $("#nav").hidden = !hasKey;
  if (!hasKey) { view().innerHTML = ""; $("#key").focus(); return; }
  const h = location.hash || "#/jobs";
  const [path, query] = h.slice(2).split("?");
  const [page, id] = [path.split("/")[0], path.split("/").slice(1).join("/")];
  document.querySelectorAll("nav a").forEach((a) => {
    const on = a.getAttribute("href") === "#/" + page;
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  view().innerHTML = `<p class="empty">loading…</p>`;
  try {
    await (PAGES[page] || PAGES.jobs)(id, new URLSearchParams(query || ""));
    document.title = `${page || "jobs"} · Adapter composition`;
  } catch (e) {
    if (nav === navigation) { showError(e.message); view().innerHTML = ""; }
  }
}

onUnauthorized(() => { leavePage(); $("#login").hidden = false; $("#nav").hidden = true; });
$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("composer-key", $("#key").value.trim());
  showError("");
  route();
});
$("#logout").addEventListener("click", () => { sessionStorage.removeItem("composer-key"); route(); });
window.addEventListener("hashchange", () => { showError(""); route(); });
route();
