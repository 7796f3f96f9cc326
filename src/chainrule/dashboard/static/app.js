// chainrule dashboard: the page's side. The server trains; this page sends commands,
// listens to server-sent events and draws them with plotly.js (served by the app itself).
"use strict";

const FIELDS = ["dataset", "depth", "width", "activation", "residual", "norm", "dropout", "init", "bias_init", "loss", "optimizer", "lr", "batch_size", "seed"];
const $ = (id) => document.getElementById(id);
const sessionId = (crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36)).replace(/[^A-Za-z0-9_-]/g, "");

// what a test (or a curious person in the console) can read: how often the charts were redrawn
const stats = (window.dashboardStats = { session: sessionId, snapshots: 0, draws: 0, drawMs: 0, drawTimes: [], lastDrawMs: null, setups: 0 });

let options = null;
let setup = null; // the current run's setup message
let latest = null; // the latest snapshot
let drawnMeasure = null; // measured_at of the last drawn health and picture
let pending = false;
let changedSinceRun = false;
let gradRange = null;

const PLOT_CONFIG = { displayModeBar: false, responsive: true };
const BASE_LAYOUT = { margin: { l: 52, r: 44, t: 8, b: 36 }, font: { size: 11 }, showlegend: true, legend: { orientation: "h", y: 1.12, x: 0 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff" };
const CLASS_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e4)) return v.toExponential(digits - 1);
  return Number(v.toPrecision(digits)).toString();
}

function pct(v) {
  return v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`;
}

// ---- settings: the form, the address bar and the server's checks ---------------------------
function fillSelect(id, values, labels) {
  const el = $(id);
  el.innerHTML = "";
  for (const v of values) {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = labels ? labels[v] || v : v.replace(/_/g, " ");
    el.appendChild(o);
  }
}

function formValues() {
  const out = {};
  for (const f of FIELDS) out[f] = $(f).value;
  return out;
}

function fillForm(values) {
  for (const f of FIELDS) if (values[f] !== undefined && values[f] !== null) $(f).value = String(values[f]);
  filterLosses();
}

function filterLosses() {
  // offer only the losses that fit the dataset's task
  const ds = options.datasets.find((d) => d.name === $("dataset").value);
  if (!ds) return;
  const keep = $("loss").value;
  const allowed = ["auto"].concat(options.losses_for_task[ds.task]);
  fillSelect("loss", allowed);
  $("loss").value = allowed.includes(keep) ? keep : "auto";
  $("dataset-note").textContent = ds.description;
}

function writeAddress() {
  const q = new URLSearchParams(formValues()).toString();
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

function showMessage(text) {
  const m = $("message");
  m.textContent = text;
  m.hidden = !text;
}

function showState(state, error) {
  const el = $("state");
  el.textContent = state;
  el.dataset.state = state;
  if (error) showMessage(error);
}

// ---- commands ---------------------------------------------------------------------------------
async function command(name, withSettings) {
  const init = { method: "POST" };
  if (withSettings) {
    init.body = JSON.stringify(formValues());
    init.headers = { "Content-Type": "application/json" };
  }
  let res, body;
  try {
    res = await fetch(`/api/sessions/${sessionId}/${name}`, init);
    body = await res.json();
  } catch (e) {
    showMessage(`The server did not answer (${e}). Is chainrule dashboard still running?`);
    return;
  }
  if (!res.ok) {
    showMessage(body.error || `the server answered ${res.status}`);
    return;
  }
  showMessage("");
  showState(body.state, body.error);
  if (withSettings) {
    changedSinceRun = false;
    $("changed").hidden = true;
  }
}

// ---- the event stream -------------------------------------------------------------------------
function connect() {
  const es = new EventSource(`/api/sessions/${sessionId}/events`);
  es.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "setup") onSetup(m);
    else if (m.type === "snapshot") {
      latest = m;
      stats.snapshots++;
      schedule();
    } else if (m.type === "reset") onReset();
  };
  es.onerror = () => {
    if ($("state").dataset.state === "running") showState("reconnecting");
  };
}

function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(draw);
}

function layerNames() {
  // chart labels: the layer's number, "out" for the output layer
  return setup.layers.map((l) => (l.activation === "none" ? "out" : String(l.layer)));
}

function logRange(values, previous) {
  // a log axis range in whole decades, kept while the values fit, so the axis does not jitter
  const v = values.filter((x) => x !== null && x > 0);
  if (!v.length) return previous || [-3, 0];
  const lo = Math.log10(Math.min(...v));
  const hi = Math.log10(Math.max(...v));
  if (previous && lo >= previous[0] && hi <= previous[1] && previous[1] - previous[0] <= hi - lo + 4) return previous;
  return [Math.floor(lo) - 0.05, Math.ceil(hi) + 0.05];
}

function onReset() {
  document.body.classList.remove("has-run"); // the empty charts' hints come back
  setup = null;
  gradRange = null;
  latest = null;
  drawnMeasure = null;
  showState("idle");
  $("progress").textContent = "";
  for (const id of ["chart-loss", "chart-grad", "chart-health", "chart-view", "chart-grad-history"]) if (window.Plotly) Plotly.purge($(id));
  if (window.networkPanel) window.networkPanel.draw($("network-svg"), null);
  $("grad-table").tBodies[0].innerHTML = "";
  $("digits").hidden = true;
  $("digits").innerHTML = "";
  $("view-note").textContent = "";
  $("warnings-box").hidden = true;
}

function onSetup(m) {
  onReset();
  setup = m;
  document.body.classList.add("has-run");
  stats.setups++;
  const body = $("grad-table").tBodies[0];
  for (const l of m.layers) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${l.layer}</td><td>${l.activation === "none" ? "output" : l.activation}</td><td class="grad">–</td><td class="ratio">–</td><td class="sat">–</td><td class="dead">–</td>`;
    body.appendChild(tr);
  }
  $("loss-title").textContent = m.metric_name ? `Loss and test ${m.metric_name}` : "Loss, training and test";
  const titles = {
    boundary: "Decision boundary (test points)",
    curve: "Fitted curve (training points)",
    images: m.task === "multilabel" ? "Test images: predicted labels (green: all right)" : "Test images: predicted class and probability",
  };
  $("view-title").textContent = titles[m.picture] || "What the network learned";
  if (m.picture === "images" && m.task === "multilabel") $("view-note").textContent = "Labels: " + m.names.map((n, i) => `${i} ${n.replace(/_/g, " ")}`).join(" · ");
  $("chart-view").hidden = m.picture === "images";
  if (m.picture === "images") buildDigits(m);
  if (!m.picture) $("view-note").textContent = "No picture for this dataset: follow the loss and the layers.";
}

function buildDigits(m) {
  const box = $("digits");
  box.hidden = false;
  const [h, w] = m.image_shape;
  m.images.forEach((pixels, i) => {
    const fig = document.createElement("figure");
    fig.className = "digit";
    const c = document.createElement("canvas");
    c.width = w;
    c.height = h;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(w, h);
    const channels = pixels.length / (w * h);
    for (let p = 0; p < w * h; p++) {
      for (let ch = 0; ch < 3; ch++) {
        const v = pixels[p * channels + (channels === 3 ? ch : 0)];
        img.data[p * 4 + ch] = Math.round(255 * (1 - v));
      }
      img.data[p * 4 + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const cap = document.createElement("figcaption");
    cap.textContent = "–";
    const truth = m.image_labels[i];
    fig.title = `true: ${Array.isArray(truth) ? truth.map((k) => m.names[k]).join(", ") || "nothing" : m.names[truth]}`;
    fig.append(c, cap);
    box.appendChild(fig);
  });
}

// ---- drawing ----------------------------------------------------------------------------------
function draw() {
  pending = false;
  const s = latest;
  if (!s || !setup || s.run !== setup.run) return;
  drawTable(s);
  drawStatus(s);
  if (!window.Plotly) return; // still loading: the charts follow when it arrives
  const t0 = performance.now();
  drawLoss(s);
  drawGrad(s);
  drawGradHistory(s);
  if (s.measured_at !== drawnMeasure) {
    drawHealth(s);
    drawView(s);
    if (window.networkPanel && s.network) window.networkPanel.draw($("network-svg"), s.network);
    drawnMeasure = s.measured_at;
  }
  const t1 = performance.now();
  stats.draws++;
  stats.lastDrawMs = t1 - t0;
  stats.drawMs += t1 - t0;
  stats.drawTimes.push(t1);
  if (stats.drawTimes.length > 500) stats.drawTimes.splice(0, 250);
}

// the training loss smoothed as TensorBoard does: an exponential moving average, debiased at the start
const SMOOTHING = 0.9;
function smoothed(values) {
  const out = [];
  let avg = 0;
  let weight = 0;
  for (const v of values) {
    if (v === null || !Number.isFinite(v)) {
      out.push(null);
      continue;
    }
    avg = SMOOTHING * avg + (1 - SMOOTHING) * v;
    weight = SMOOTHING * weight + (1 - SMOOTHING);
    out.push(avg / weight);
  }
  return out;
}

function drawLoss(s) {
  const traces = [
    { x: s.loss.step, y: s.loss.value, name: "training loss (batch)", mode: "lines", line: { width: 1, color: "#c3cad6" } },
    { x: s.loss.step, y: smoothed(s.loss.value), name: `smoothed (${SMOOTHING})`, mode: "lines", line: { width: 2, color: "#59657a" } },
    { x: s.test_loss.step, y: s.test_loss.value, name: "test loss", mode: "lines", line: { width: 2, color: "#2f6fdf" } },
  ];
  const layout = {
    ...BASE_LAYOUT,
    uirevision: setup.run,
    xaxis: { title: { text: "step" }, zeroline: false },
    yaxis: { title: { text: `loss (${setup.loss})` }, type: "log", exponentformat: "power" },
  };
  if (setup.metric_name) {
    traces.push({ x: s.test_metric.step, y: s.test_metric.value, name: `test ${setup.metric_name}`, mode: "lines", yaxis: "y2", line: { width: 2, color: "#1b8a4b" } });
    layout.yaxis2 = { title: { text: setup.metric_name }, overlaying: "y", side: "right", range: [0, 1], tickmode: "linear", tick0: 0, dtick: 0.25, tickformat: ".0%", showgrid: false };
  }
  Plotly.react("chart-loss", traces, layout, PLOT_CONFIG);
}

function drawGrad(s) {
  const g = s.layers.grad_norm;
  const names = layerNames();
  const measured = g.some((v) => v !== null);
  const zero = g.map((v) => v === 0);
  const traces = [{ type: "bar", x: names, y: g.map((v) => (v !== null && v > 0 ? v : null)), name: "||dL/dW||", marker: { color: "#2f6fdf" }, hovertemplate: "%{x}: %{y:.3e}<extra></extra>" }];
  gradRange = logRange(g, gradRange);
  // a gradient of exactly 0 has no place on a log axis: mark the layer at the bottom as dead instead of hiding it
  if (zero.some(Boolean)) {
    const bottom = Math.pow(10, gradRange[0] + 0.02 * (gradRange[1] - gradRange[0]));
    traces.push({
      type: "scatter", mode: "markers+text", x: names.filter((_, i) => zero[i]), y: names.filter((_, i) => zero[i]).map(() => bottom),
      text: names.filter((_, i) => zero[i]).map(() => "0"), textposition: "top center", name: "gradient exactly 0: dead layer",
      marker: { symbol: "x", size: 12, color: "#c0392b" }, hovertemplate: "%{x}: gradient exactly 0 (dead layer)<extra></extra>", cliponaxis: false,
    });
  }
  const allZero = measured && g.every((v) => v === 0 || v === null) && zero.some(Boolean);
  let note = [];
  if (!measured) note = [{ text: "no step taken yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  else if (allZero) note = [{ text: "every gradient is exactly 0: no unit passes a gradient back (a dead network)", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.55, font: { color: "#c0392b" } }];
  else if (zero.some(Boolean)) note = [{ text: "✕: a layer whose gradient is exactly 0 (dead)", showarrow: false, xref: "paper", yref: "paper", x: 1, xanchor: "right", y: 1.08, font: { color: "#c0392b" } }];
  const layout = {
    ...BASE_LAYOUT,
    showlegend: false,
    uirevision: setup.run,
    xaxis: { type: "category", title: { text: "layer (input → output)" } },
    yaxis: { type: "log", range: gradRange, title: { text: "||dL/dW||" }, exponentformat: "power" },
    annotations: note,
  };
  Plotly.react("chart-grad", traces, layout, PLOT_CONFIG);
}

function drawGradHistory(s) {
  const h = s.grad_history;
  if (!h || !h.step.length) return;
  const names = layerNames();
  // layers as rows (input at the top, as in the run folder's gradient_norms.png), steps as columns, log10 colour
  const z = names.map((_, k) => h.norms.map((col) => (col[k] === null ? null : col[k] > 0 ? Math.log10(col[k]) : null)));
  const zeros = names.map((_, k) => h.norms.map((col) => col[k] === 0));
  const text = names.map((_, k) => h.norms.map((col) => (col[k] === null ? "–" : col[k] === 0 ? "0 (dead)" : col[k].toExponential(2))));
  const traces = [{
    type: "heatmap", x: h.step, y: names, z, text, colorscale: "Viridis", hovertemplate: "step %{x}, layer %{y}: %{text}<extra></extra>",
    colorbar: { title: { text: "log10 ||dL/dW||", side: "right" }, thickness: 10 },
  }];
  if (zeros.some((row) => row.some(Boolean))) {
    // exactly zero: drawn in red, on top, so that a dead layer is a red row, not a gap
    traces.push({ type: "heatmap", x: h.step, y: names, z: zeros.map((row) => row.map((v) => (v ? 1 : null))), colorscale: [[0, "#c0392b"], [1, "#c0392b"]], showscale: false, hoverinfo: "skip", name: "zero" });
  }
  const layout = {
    ...BASE_LAYOUT, showlegend: false, uirevision: setup.run,
    xaxis: { title: { text: "step" } }, yaxis: { title: { text: "layer" }, autorange: "reversed", type: "category" },
  };
  Plotly.react("chart-grad-history", traces, layout, PLOT_CONFIG);
}

function drawHealth(s) {
  const names = layerNames();
  const sat = s.layers.saturated_fraction;
  const dead = s.layers.dead_fraction;
  const traces = [];
  if (sat.some((v) => v !== null)) traces.push({ type: "bar", x: names, y: sat, name: "saturated (sigmoid, tanh)", marker: { color: "#e08a1e" } });
  if (dead.some((v) => v !== null)) traces.push({ type: "bar", x: names, y: dead, name: "dead (ReLU, ELU, GELU, SiLU: flat on every probe row)", marker: { color: "#c0392b" } });
  const layout = {
    ...BASE_LAYOUT,
    barmode: "group",
    uirevision: setup.run,
    xaxis: { type: "category", title: { text: "layer (input → output)" } },
    yaxis: { range: [0, 1], title: { text: "fraction of units" }, tickformat: ".0%" },
    annotations: traces.length ? [] : [{ text: `no dead or saturated rule for ${setup.settings.activation}`, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
  };
  Plotly.react("chart-health", traces.length ? traces : [{ type: "bar", x: names, y: names.map(() => 0), showlegend: false }], layout, PLOT_CONFIG);
}

function drawView(s) {
  const v = s.view;
  if (!v) return;
  if (setup.picture === "images") return drawDigits(v);
  let traces, layout;
  if (setup.picture === "boundary") {
    const p = setup.points;
    const k = setup.num_classes;
    const heat = { type: "heatmap", x: setup.grid.x, y: setup.grid.y, z: v.z, opacity: 0.55, showscale: false, hoverinfo: "skip" };
    if (v.kind === "probability") Object.assign(heat, { zmin: 0, zmax: 1, colorscale: [[0, CLASS_COLORS[0]], [0.5, "#ffffff"], [1, CLASS_COLORS[1]]] });
    else Object.assign(heat, { zmin: -0.5, zmax: k - 0.5, colorscale: discreteScale(k) });
    traces = [heat];
    for (let c = 0; c < k; c++) {
      const idx = p.label.map((l, i) => (l === c ? i : -1)).filter((i) => i >= 0);
      traces.push({ type: "scatter", mode: "markers", x: idx.map((i) => p.x[i]), y: idx.map((i) => p.y[i]), name: setup.names[c] === String(c) ? `class ${c}` : setup.names[c], marker: { size: 5, color: CLASS_COLORS[c % 10], line: { width: 0.5, color: "#fff" } } });
    }
    // the axes end where the grid ends and the plot area shrinks to keep x and y at one scale, so the
    // predictions cover the whole plotted area (no blank margin beside the grid)
    layout = {
      ...BASE_LAYOUT, uirevision: setup.run,
      xaxis: { range: [setup.grid.x[0], setup.grid.x.at(-1)], constrain: "domain" },
      yaxis: { range: [setup.grid.y[0], setup.grid.y.at(-1)], scaleanchor: "x", constrain: "domain" },
    };
  } else {
    traces = [
      { type: "scatter", mode: "markers", x: setup.points.x, y: setup.points.y, name: "training data", marker: { size: 4, color: "#9aa7bd" } },
      { type: "scatter", mode: "lines", x: setup.grid.x, y: v.y, name: "network", line: { width: 3, color: "#2f6fdf" } },
    ];
    layout = { ...BASE_LAYOUT, uirevision: setup.run, xaxis: { title: { text: "x" } }, yaxis: { title: { text: "y" } } };
  }
  Plotly.react("chart-view", traces, layout, PLOT_CONFIG);
}

function discreteScale(k) {
  const scale = [];
  for (let c = 0; c < k; c++) {
    scale.push([c / k, CLASS_COLORS[c % 10]], [(c + 1) / k, CLASS_COLORS[c % 10]]);
  }
  return scale;
}

function drawDigits(v) {
  const figs = $("digits").children;
  for (let i = 0; i < figs.length; i++) {
    const cap = figs[i].querySelector("figcaption");
    const truth = setup.image_labels[i];
    if (v.predicted) {
      cap.textContent = `${v.predicted[i]} · ${v.probability[i].toFixed(2)}`;
      figs[i].className = `digit ${v.predicted[i] === truth ? "right" : "wrong"}`;
    } else {
      const same = JSON.stringify(v.labels[i]) === JSON.stringify(truth);
      cap.textContent = `{${v.labels[i].join(",")}}`;
      figs[i].className = `digit ${same ? "right" : "wrong"}`;
    }
  }
}

function drawTable(s) {
  const rows = $("grad-table").tBodies[0].rows;
  const L = s.layers;
  for (let i = 0; i < rows.length; i++) {
    const c = rows[i].cells;
    c[2].textContent = fmt(L.grad_norm[i]);
    c[2].dataset.value = L.grad_norm[i] === null ? "" : String(L.grad_norm[i]);
    c[3].textContent = fmt(L.update_ratio[i]);
    c[4].textContent = pct(L.saturated_fraction[i]);
    c[5].textContent = pct(L.dead_fraction[i]);
  }
  const warnings = s.warnings || [];
  $("warnings-box").hidden = warnings.length === 0;
  const list = $("warnings");
  if (list.childElementCount !== warnings.length) {
    list.innerHTML = "";
    for (const w of warnings) {
      const li = document.createElement("li");
      li.textContent = w;
      list.appendChild(li);
    }
  }
}

function drawStatus(s) {
  showState(s.state);
  if (s.error) showMessage(s.error);
  const parts = [`step ${s.step}`, `epoch ${fmt(s.epoch, 3)}`];
  if (s.steps_per_second) parts.push(`${fmt(s.steps_per_second, 3)} steps/s`);
  if (s.metric !== null && s.metric !== undefined) parts.push(`test ${setup.metric_name} ${pct(s.metric)}`);
  else if (s.test_loss.value.length) parts.push(`test loss ${fmt(s.test_loss.value.at(-1))}`);
  $("progress").textContent = parts.join(" · ");
}

// ---- start-up ---------------------------------------------------------------------------------
async function main() {
  options = await (await fetch("/api/options")).json();
  fillSelect("dataset", options.datasets.map((d) => d.name));
  fillSelect("activation", options.activations);
  fillSelect("residual", ["false", "true"], { false: "off", true: "on" });  // on: x + block(x) around each block
  fillSelect("norm", options.norms);
  fillSelect("init", options.inits);
  fillSelect("optimizer", options.optimizers, { adam: "Adam", sgd: "SGD", momentum: "SGD + momentum 0.9" });
  fillForm(options.defaults);
  const res = await fetch(`/api/settings${location.search}`);
  const body = await res.json();
  if (res.ok) {
    fillForm(body.settings);
    if (location.search) history.replaceState(null, "", `${location.pathname}?${body.query}`);
  } else {
    // keep what the address asked for where it fits, and say what was refused
    const asked = Object.fromEntries(new URLSearchParams(location.search));
    fillForm(asked);
    showMessage(`The settings in this address were refused: ${body.error}`);
  }
  $("settings").addEventListener("change", (e) => {
    if (e.target.id === "dataset") filterLosses();
    writeAddress();
    if (setup) {
      changedSinceRun = true;
      $("changed").hidden = false;
    }
  });
  $("start").addEventListener("click", () => command("start", true));
  $("step").addEventListener("click", () => command("step", true));
  $("pause").addEventListener("click", () => command("pause", false));
  $("reset").addEventListener("click", () => command("reset", false));
  window.addEventListener("pagehide", () => navigator.sendBeacon(`/api/sessions/${sessionId}/close`));
  connect();
  document.body.dataset.ready = "1";
}

function loadPlotly() {
  const script = document.createElement("script");
  script.src = "/vendor/plotly.min.js";
  script.onload = () => {
    drawnMeasure = null;
    schedule();
  };
  script.onerror = () => showMessage("plotly.min.js did not load: the charts cannot be drawn.");
  document.head.appendChild(script);
}

// after the first frame is painted
requestAnimationFrame(() => setTimeout(loadPlotly, 0));
main().catch((e) => showMessage(`The page could not start: ${e}`));
