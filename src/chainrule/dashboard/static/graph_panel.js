// chainrule dashboard: the live computation graph card. Asks the server for the run's graph about
// once a second and draws it with chainruleGraph (served at /vendor/compgraph.js), each edge
// coloured by the size of the gradient flowing through it (blue: small, red: large; log scale).
"use strict";

(function () {
  const PERIOD_MS = 1000;
  const panel = (window.graphPanel = { draws: 0, step: null, nodes: 0, edges: 0, error: null });

  async function refresh() {
    const card = document.getElementById("graph-card");
    const stats = window.dashboardStats;
    if (!card || !stats || !window.chainruleGraph || document.hidden) return;
    const note = document.getElementById("graph-note");
    let res;
    try {
      res = await fetch(`/api/sessions/${stats.session}/graph`, { cache: "no-store" });
    } catch (e) {
      return;  // the server is restarting: try again next time
    }
    const data = await res.json();
    if (!res.ok) {
      panel.error = data.error;
      note.textContent = data.error || "";
      return;
    }
    panel.error = null;
    if (data.step === panel.step && panel.draws) return;
    window.chainruleGraph.draw(document.getElementById("graph-svg"), data, { colourEdges: true });
    Object.assign(panel, { draws: panel.draws + 1, step: data.step, nodes: data.nodes.length, edges: data.edges.length });
    note.textContent = `Step ${data.step}: the loss on ${data.rows} training rows through the network now, ` +
      (data.expanded ? "operation by operation" : `one node per layer (more than 50 units: ${data.units})`) +
      ". Edge colour: the gradient sent back along it (blue small, red large); hover for numbers.";
  }

  setInterval(refresh, PERIOD_MS);
  window.addEventListener("load", refresh);
})();
