// chainrule dashboard: the network view, in the manner of TensorFlow Playground. Units are
// nodes in columns (input on the left), weights are edges coloured by sign (blue positive,
// orange negative) and drawn thicker the larger they are; a unit's fill is its activity on the
// probe batch, and hovering over a unit or an edge gives its numbers. The server sends the
// data with each measured snapshot (chainrule.dashboard.views.network); app.js calls draw().
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const POSITIVE = "#2f6fdf";
  const NEGATIVE = "#e8751a";
  const panel = (window.networkPanel = { draws: 0, nodes: 0, edges: 0, draw });

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function title(e, text) {
    el("title", {}, e).textContent = text;
  }

  function num(v) {
    if (v === null || v === undefined) return "–";
    return Math.abs(v) >= 1e-3 || v === 0 ? Number(v.toPrecision(3)).toString() : v.toExponential(2);
  }

  // net: {sizes, shown: [[unit index, ...] per layer], weights: [[[w]] per pair of shown columns],
  //       activity: [[mean output per shown unit] per layer], active: [[share of probe rows with a slope] ...],
  //       dead: [[true/false] ...], names: [column labels], max_weight}
  function draw(svg, net) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!net) return;
    const width = svg.clientWidth || 600;
    const cols = net.shown.length;
    const tallest = Math.max(...net.shown.map((s) => s.length));
    const gap = 22;
    const height = Math.max(120, 40 + tallest * gap);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.style.height = `${height}px`;
    const x = (c) => 40 + (c * (width - 80)) / Math.max(cols - 1, 1);
    const y = (c, i) => 30 + (height - 40 - net.shown[c].length * gap) / 2 + i * gap + gap / 2;
    let edges = 0;
    const edgeLayer = el("g", { class: "edges" }, svg);
    net.weights.forEach((matrix, c) => {
      matrix.forEach((row, i) => {
        row.forEach((w, j) => {
          const size = Math.abs(w) / (net.max_weight || 1);
          const line = el("line", {
            x1: x(c), y1: y(c, i), x2: x(c + 1), y2: y(c + 1, j),
            stroke: w >= 0 ? POSITIVE : NEGATIVE, "stroke-width": (0.3 + 3.2 * size).toFixed(2),
            "stroke-opacity": (0.15 + 0.75 * size).toFixed(2), class: w >= 0 ? "edge positive" : "edge negative",
          }, edgeLayer);
          title(line, `weight from ${net.names[c]} unit ${net.shown[c][i] + 1} to ${net.names[c + 1]} unit ${net.shown[c + 1][j] + 1}: ${num(w)}`);
          edges++;
        });
      });
    });
    let nodes = 0;
    net.shown.forEach((units, c) => {
      const acts = net.activity[c];
      const top = Math.max(1e-12, ...acts.map((a) => Math.abs(a ?? 0)));
      units.forEach((u, i) => {
        const a = acts[i];
        const dead = net.dead[c] ? net.dead[c][i] : false;
        const level = a === null ? 0 : Math.abs(a) / top;
        const fill = dead ? "#b9bec7" : a === null ? "#ffffff" : `rgba(${a >= 0 ? "47,111,223" : "232,117,26"},${(0.1 + 0.9 * level).toFixed(2)})`;
        const g = el("g", { class: dead ? "unit dead" : "unit" }, svg);
        el("circle", { cx: x(c), cy: y(c, i), r: 7, fill, stroke: dead ? "#7a808a" : "#1d2430", "stroke-width": 0.8 }, g);
        const active = net.active[c] ? net.active[c][i] : null;
        let text = `${net.names[c]} unit ${u + 1}`;
        if (a !== null) text += `: mean output ${num(a)} on the probe batch`;
        if (active !== null && active !== undefined) text += `, passes a gradient on ${(100 * active).toFixed(0)}% of its rows`;
        if (dead) text += " (dead: no gradient on any row)";
        title(g, text);
        nodes++;
      });
      const total = net.sizes[c];
      const label = el("text", { x: x(c), y: 14, "text-anchor": "middle", "font-size": 11, fill: "#5d6675" }, svg);
      label.textContent = units.length < total ? `${net.names[c]} (${units.length} of ${total})` : net.names[c];
    });
    Object.assign(panel, { draws: panel.draws + 1, nodes, edges });
  }
})();
