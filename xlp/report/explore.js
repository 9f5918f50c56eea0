// report/explore.html's controls: draw the run's curves, transfer heatmap and layers view with Plotly from
// the data xlp/report/explore.py writes into the page (curves quantised to 16 bits over the task's range).
"use strict";
const DATA = JSON.parse(document.getElementById("xlp-data").textContent);
const $ = (id) => document.getElementById(id);
const LEVELS = 65535;

function unpack(text, lo, hi) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const q = new Uint16Array(bytes.buffer);
  const span = hi - lo || 1;
  return Array.from(q, (x) => (x === 0 ? null : lo + ((x - 1) / (LEVELS - 1)) * span));
}

function options(select, values, selected) {
  select.innerHTML = "";
  for (const v of values) {
    const o = document.createElement("option");
    o.value = o.textContent = v;
    o.selected = selected(v);
    select.appendChild(o);
  }
}

function chosen(select) {
  return Array.from(select.selectedOptions, (o) => o.value);
}

function task() {
  return DATA.tasks[$("task").value];
}

function layer() {
  return task().layers[Number($("layer").value)];
}

function drawCurves() {
  const t = task(), L = layer(), src = $("source").value;
  const traces = [];
  for (const lang of chosen($("langs"))) {
    const key = src ? `${L}|${src}|${lang}` : `${L}|${lang}|${lang}`;
    const c = t.curves[key];
    if (!c) continue;
    const mean = unpack(c.mean, t.lo, t.hi);
    const trace = {x: DATA.steps, y: mean, name: src ? `${src}→${lang}` : lang, mode: "lines+markers",
                   connectgaps: false, hovertemplate: "step %{x}: %{y:.4f}<extra>%{fullData.name}</extra>"};
    if (c.min) {
      const lo = unpack(c.min, t.lo, t.hi), hi = unpack(c.max, t.lo, t.hi);
      trace.error_y = {type: "data", symmetric: false, array: hi.map((h, i) => (h === null ? null : h - mean[i])),
                       arrayminus: lo.map((l, i) => (l === null ? null : mean[i] - l)), thickness: 1, width: 2};
    }
    traces.push(trace);
  }
  const what = src ? `from ${src} to each language` : "in-language";
  Plotly.react("curves", traces, {title: {text: `${$("task").value}: ${what}, layer ${L} (seed mean; bars: seeds' range)`},
    xaxis: {title: {text: "pretraining step"}, type: "log"}, yaxis: {title: {text: `${t.metric} (${t.higher_is_better ?
    "higher" : "lower"} is better)`}}, margin: {t: 40}});
}

function drawTransfer() {
  const t = task(), L = layer(), langs = t.languages;
  const z = langs.map((s) => langs.map((g) => {
    const e = t.emergence[`${L}|${s}|${g}`];
    return e ? e[0] : null;
  }));
  const text = langs.map((s) => langs.map((g) => {
    const e = t.emergence[`${L}|${s}|${g}`];
    if (!e) return "not in the run";
    return e[0] === null ? "did not emerge" : `step ${e[0]} (${e[1]}–${e[2]})`;
  }));
  Plotly.react("transfer", [{type: "heatmap", x: langs, y: langs, z, text, colorscale: "Viridis",
    hovertemplate: "%{y} → %{x}: %{text}<extra></extra>", colorbar: {title: {text: "emergence step"}}}],
    {title: {text: `${$("task").value}: emergence step of each source → target curve, layer ${L}`},
     xaxis: {title: {text: "target"}}, yaxis: {title: {text: "source"}, autorange: "reversed"}, margin: {t: 40}});
}

function drawLayers() {
  const t = task();
  const z = t.layers.map((L) => {
    const curves = t.languages.map((lang) => t.curves[`${L}|${lang}|${lang}`]).filter((c) => c)
      .map((c) => unpack(c.mean, t.lo, t.hi));
    return DATA.steps.map((_, i) => {
      const values = curves.map((c) => c[i]).filter((v) => v !== null);
      return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
    });
  });
  Plotly.react("layers", [{type: "heatmap", x: DATA.steps.map(String), y: t.layers.map(String), z,
    colorscale: "Viridis", hovertemplate: "layer %{y}, step %{x}: %{z:.4f}<extra></extra>"}],
    {title: {text: `${$("task").value}: in-language ${t.metric} by layer and step (mean over languages)`},
     xaxis: {title: {text: "pretraining step"}, type: "category"}, yaxis: {title: {text: "layer"}}, margin: {t: 40}});
}

function draw() {
  $("layer-value").textContent = layer();
  drawCurves();
  drawTransfer();
  drawLayers();
}

function chooseTask() {
  const t = task();
  $("layer").max = t.layers.length - 1;
  $("layer").value = t.layers.length - 1;
  options($("langs"), t.languages, (_, i) => true);
  options($("source"), ["", ...t.languages], (v) => v === "");
  $("source").options[0].textContent = "in-language";
  draw();
}

options($("task"), Object.keys(DATA.tasks), (v) => v === Object.keys(DATA.tasks)[0]);
$("task").addEventListener("change", chooseTask);
for (const id of ["layer", "langs", "source"]) $(id).addEventListener(id === "layer" ? "input" : "change", draw);
if (Object.keys(DATA.tasks).length) chooseTask();
