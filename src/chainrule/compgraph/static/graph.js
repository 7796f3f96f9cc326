// chainrule's computation-graph drawing and backpropagation player: plain SVG, no library,
// no network. Used inline by Graph.to_html() and served to the dashboard.
// Data: Graph.to_dict() -> {nodes: [{id, kind, op, label, shape, value, grad, order, x, y}],
//                           edges: [{source, target, slot, grad, local}], order, steps}
(function (root) {
  "use strict";
  const W = 150, H = 58, DX = 210, DY = 78, PAD = 20, TOP = 40;
  const FILL = { output: "#fde2c8", op: "#e8eef9", layer: "#dcefdc", leaf: "#fff6cc", constant: "#f4f4f4" };

  // a number; an array by its norm, written ||n|| (fmtLong adds its mean and range)
  function fmt(v) {
    if (v === null || v === undefined) return "?";
    if (typeof v === "string") return v;  // "nan", "inf", "-inf"
    if (typeof v === "object") return v.mean === null ? "empty" : `\u2016${fmt(v.norm)}\u2016`;
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(+v.toPrecision(4));
  }

  function fmtLong(v) {
    if (v === null || typeof v !== "object" || v.mean === null) return fmt(v);
    return `norm ${fmt(v.norm)}, mean ${fmt(v.mean)}, in [${fmt(v.min)}, ${fmt(v.max)}]`;
  }

  // the size of a gradient: the number itself, or the norm of an array
  function magnitude(v) {
    if (v === null || v === undefined) return null;
    if (typeof v === "object") return v.norm;
    if (typeof v === "string") return Infinity;
    return Math.abs(v);
  }

  // edge colour from the gradient's size on a log scale: grey (none) -> blue (tiny) -> red (large)
  function gradColour(v, lo, hi) {
    const m = magnitude(v);
    if (m === null) return "#9aa3ad";
    if (!isFinite(m)) return "#7b1fa2";
    if (m === 0) return "#c9ced6";
    const t = hi > lo ? Math.min(1, Math.max(0, (Math.log10(m) - lo) / (hi - lo))) : 0.5;
    const hue = 220 - 220 * t;  // blue to red
    return `hsl(${hue}, 75%, 45%)`;
  }

  function logRange(edges) {
    const logs = edges.map(e => magnitude(e.grad)).filter(m => m !== null && m > 0 && isFinite(m)).map(Math.log10);
    if (!logs.length) return [0, 0];
    return [Math.min(...logs), Math.max(...logs)];
  }

  function attrs(a) {
    return Object.keys(a).map(k => `${k}="${esc(a[k])}"`).join(" ");
  }

  function place(n) { return [PAD + n.x * DX, TOP + n.y * DY]; }

  // Draw the graph into the <svg> `svg` (as markup: the HTML parser gives it the SVG namespace);
  // returns {nodes: id -> <g>, edges: index -> <path>, labels: index -> <text>}.
  function draw(svg, data, opts) {
    opts = opts || {};
    const cols = Math.max(0, ...data.nodes.map(n => n.x)) + 1;
    const rows = Math.max(0, ...data.nodes.map(n => n.y)) + 1;
    const width = 2 * PAD + (cols - 1) * DX + W;
    svg.setAttribute("viewBox", `0 0 ${width} ${TOP + PAD + (rows - 1) * DY + H}`);
    svg.style.minWidth = `${Math.round(0.7 * width)}px`;  // a large graph scrolls rather than shrinks
    const [lo, hi] = logRange(data.edges);
    const parts = ['<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" ' +
      'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#667"></path></marker></defs>',
      '<g class="edges">'];
    data.edges.forEach(e => {
      const [x1, y1] = place(data.nodes[e.source]);
      const [x2, y2] = place(data.nodes[e.target]);
      const sx = x1 + W, sy = y1 + H / 2 + (e.slot - 0.5) * 6, tx = x2, ty = y2 + H / 2 + (e.slot - 0.5) * 8;
      const mx = (sx + tx) / 2;
      // an edge that skips columns bows above the nodes it would cross
      const bow = data.nodes[e.target].x - data.nodes[e.source].x > 1 ? -0.62 * DY : 0;
      const colour = opts.colourEdges ? gradColour(e.grad, lo, hi) : "#8a93a0";
      const width = opts.colourEdges && e.grad !== null ? 2.5 : 1.4;
      const tip = `${data.nodes[e.source].label} \u2192 ${data.nodes[e.target].label}` +
        (e.grad !== null ? `: gradient sent back ${fmtLong(e.grad)}` : "");
      parts.push(`<path ${attrs({ d: bow ? `M ${sx} ${sy} C ${sx + 70} ${sy + bow}, ${tx - 70} ${ty + bow}, ${tx} ${ty}`
        : `M ${sx} ${sy} C ${mx} ${sy}, ${mx} ${ty}, ${tx} ${ty}`, fill: "none", stroke: colour,
        "stroke-width": width, "marker-end": "url(#arrow)", class: "edge", "data-source": e.source, "data-target": e.target })}>` +
        `<title>${esc(tip)}</title></path>`,
        `<text ${attrs({ x: mx, y: (sy + ty) / 2 - 4 + 0.75 * bow, "text-anchor": "middle", class: "edge-label" })}></text>`);
    });
    parts.push('</g><g class="nodes">');
    data.nodes.forEach(n => {
      const [x, y] = place(n);
      const title = n.kind === "layer" || !n.name || !n.op ? n.label : `${n.label} (${n.op})`;
      const grad = opts.hideGrad || n.grad === null ? "" : "grad " + fmt(n.grad);
      const tip = `${title}\nshape [${n.shape.join(", ")}]\nvalue ${fmtLong(n.value)}` +
        (n.grad !== null ? `\ngrad ${fmtLong(n.grad)}` : "") + (n.members && n.members.length ? `\n${n.members.join("\n")}` : "");
      const round = n.kind === "leaf" || n.kind === "constant" ? 26 : 7;
      parts.push(`<g ${attrs({ class: `node ${n.kind}`, "data-id": n.id, transform: `translate(${x},${y})` })}>` +
        `<rect ${attrs({ width: W, height: H, rx: round, fill: FILL[n.kind] || "#fff", stroke: n.kind === "output" ? "#333" : "#8a93a0",
          "stroke-width": n.kind === "output" ? 2 : 1, "stroke-dasharray": n.kind === "constant" ? "4 3" : "none" })}></rect>` +
        `<text x="${W / 2}" y="16" text-anchor="middle" class="title">${esc(title)}</text>` +
        `<text x="${W / 2}" y="32" text-anchor="middle" class="value">${esc("value " + fmt(n.value))}</text>` +
        `<text x="${W / 2}" y="48" text-anchor="middle" class="grad">${esc(grad)}</text>` +
        `<title>${esc(tip)}</title></g>`);
    });
    parts.push("</g>");
    svg.innerHTML = parts.join("");
    const out = { nodes: {}, edges: Array.from(svg.querySelectorAll("path.edge")), labels: Array.from(svg.querySelectorAll("text.edge-label")) };
    svg.querySelectorAll("g.node").forEach(g => { out.nodes[+g.getAttribute("data-id")] = g; });
    return out;
  }

  // A player for Graph.steps: step k shows the k-th node of backward()'s order receiving its
  // whole gradient (the sum of what its consumers sent) and sending local x grad to each input.
  function player(container, data) {
    const svg = container.querySelector("svg");
    const panel = container.querySelector(".explain");
    const counter = container.querySelector(".counter");
    const shapes = draw(svg, data, { hideGrad: true });
    const steps = data.steps;
    const byNode = {};
    data.nodes.forEach(n => { byNode[n.id] = n; });
    let k = -1, timer = null;

    function received(upTo) {  // node id -> [{from, grad}] sent to it by steps 0..upTo
      const got = {};
      for (let i = 0; i <= Math.min(upTo, steps.length - 1); i++) {
        for (const e of steps[i].edges) (got[e.source] = got[e.source] || []).push({ from: steps[i].node, grad: e.grad });
      }
      return got;
    }

    function show() {
      const got = received(k);
      const current = k >= 0 && k < steps.length ? steps[k] : null;
      data.nodes.forEach(n => {
        const g = shapes.nodes[n.id];
        const gradText = g.querySelector(".grad");
        const done = steps.findIndex(s => s.node === n.id);
        let text = "";
        if (k >= steps.length - 1 && n.grad !== null) text = "grad " + fmt(n.grad);
        else if (done >= 0 && done <= k) text = "grad " + fmt(steps[done].grad);
        else if (got[n.id]) text = "got " + got[n.id].map(c => fmt(c.grad)).join(" + ");
        else if (n.id === (steps[0] || {}).node && k >= 0) text = "grad " + fmt(steps[0].grad);
        gradText.textContent = text;
        g.classList.toggle("current", !!current && current.node === n.id);
        g.classList.toggle("done", done >= 0 && done < k);
        g.classList.toggle("target", !!current && current.edges.some(e => e.source === n.id));
      });
      data.edges.forEach((e, i) => {
        const step = steps.findIndex(s => s.node === e.target);
        const sent = step >= 0 && step <= k && e.grad !== null;
        shapes.edges[i].classList.toggle("sent", sent);
        shapes.edges[i].classList.toggle("active", !!current && current.node === e.target);
        shapes.labels[i].textContent = sent ? fmt(e.grad) : "";
      });
      counter.textContent = `step ${Math.max(0, k + 1)} of ${steps.length}`;
      panel.innerHTML = "";
      if (!current) {
        panel.textContent = k < 0
          ? "Press Next: backward() starts at the output with gradient 1 and visits every node once, in reverse topological order."
          : "Done: every node got its gradient once. A node used by several operations added up what each sent before passing its sum on (memoization): one product per edge.";
        return;
      }
      const n = byNode[current.node];
      const h = document.createElement("p");
      const from = k === 0 ? "the output starts with d(output)/d(output) = 1" :
        `it received ${(got[n.id] || []).length || 1} contribution(s)` +
        ((got[n.id] || []).length > 1 ? `: ${(got[n.id] || []).map(c => fmt(c.grad)).join(" + ")} = ${fmt(current.grad)}` : "");
      h.innerHTML = `<b>${esc(n.label)}</b> (${esc(n.op || n.kind)}): gradient ${esc(fmtLong(current.grad))}; ${esc(from)}.`;
      panel.appendChild(h);
      const table = document.createElement("table");
      table.innerHTML = "<tr><th>to input</th><th>local derivative</th><th>\u00d7 incoming gradient</th><th>= sent back</th></tr>";
      for (const e of current.edges) {
        const row = document.createElement("tr");
        const local = e.local === null ? "Jacobian J (sent back: gradient \u00b7 J)" : fmt(e.local);
        row.innerHTML = `<td>${esc(byNode[e.source].label)}</td><td>${esc(local)}</td><td>${esc(fmtLong(current.grad))}</td><td>${esc(fmtLong(e.grad))}</td>`;
        table.appendChild(row);
      }
      panel.appendChild(table);
    }

    function go(to) { k = Math.max(-1, Math.min(steps.length, to)); show(); }
    container.querySelector(".next").onclick = () => go(k + 1);
    container.querySelector(".prev").onclick = () => go(k - 1);
    container.querySelector(".reset").onclick = () => { stop(); go(-1); };
    const playButton = container.querySelector(".play");
    function stop() { if (timer) clearInterval(timer); timer = null; playButton.textContent = "Play"; }
    playButton.onclick = () => {
      if (timer) return stop();
      if (k >= steps.length) go(-1);
      playButton.textContent = "Pause";
      timer = setInterval(() => { if (k >= steps.length) stop(); else go(k + 1); }, 1200);
    };
    show();
    return { go, step: () => k, steps: steps.length };
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  }

  root.chainruleGraph = { draw, player, fmt, fmtLong, gradColour };
})(typeof window !== "undefined" ? window : this);
