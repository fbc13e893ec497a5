// Line charts with axes, ticks and units, drawn by uPlot (served with the page: /ui/static/vendor).
import {esc} from "./core.js";

// A chart in `el`: x and y axis labels carry the units. Returns {update(points)}; points are [x, y].
export function lineChart(el, {title, x, y, color = "#2f6fd6"}) {
  const width = 540;
  let plot = null;
  const empty = () => { el.innerHTML = `<p class="empty">No ${esc(title.toLowerCase())} yet.</p>`; };
  empty();
  return {
    setY(label) { y = label; },
    update(points) {
      el.dataset.points = String(points.length);
      if (points.length < 1) return;
      const data = [points.map((p) => p[0]), points.map((p) => p[1])];
      if (!plot) {
        el.innerHTML = "";
        el.setAttribute("role", "img");  // the canvas draws the axes; this names them for a screen reader
        el.setAttribute("aria-label", `${title}: ${y} by ${x}, ${points.length} points`);
        plot = new uPlot({
          title, width, height: 240, legend: {live: false},
          scales: {x: {time: false}},
          axes: [{label: x, stroke: "#1d2330"}, {label: y, stroke: "#1d2330", size: 60}],
          series: [{label: x}, {label: y, stroke: color, width: 2, points: {show: points.length < 40}}],
        }, data, el);
      } else {
        plot.setData(data);
      }
    },
  };
}

// Fusion attention as a heat map: one row per layer (site), one column per member.
export function heatMap(id, members, layers, names = {}) {
  const head = members.map((m) => `<th scope="col" title="${esc(m)}">${esc(names[m] || m.slice(0, 14))}</th>`).join("");
  const rows = Object.entries(layers).map(([site, ws]) => `<tr><th scope="row">${esc(site)}</th>${ws.map((w) =>
    `<td class="cell" style="background: rgba(47,111,214,${(0.8 * Math.min(1, w)).toFixed(3)})">${w.toFixed(2)}</td>`).join("")}</tr>`).join("");
  return `<table class="heat" id="${id}"><caption>Mean attention per layer (rows) on each member (columns)</caption><thead><tr><th scope="col">layer</th>${head}</tr></thead><tbody>${rows}</tbody></table>`;
}
