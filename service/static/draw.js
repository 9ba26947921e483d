// SVG drawings of the page: the addition step by step, and the training curve.

const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched

/** One SVG element with attributes (presentation attributes, so the CSP's style rule holds). */
export function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** A colour from a dark-to-bright scale (close to viridis) for a value in [0, 1]. */
export function heat(value) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(1, Math.max(0, Number(value))) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const rgb = stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
  return `rgb(${rgb.join(",")})`;
}

const CELL = 24; // width of one step's column
const LABEL = 92; // width of the row labels on the left
const ROW = 22; // height of a row of bits
const UNIT = 9; // height of one hidden unit's row in the heatmap

/** The addition as the network did it: bits, probabilities and hidden activations per step.
 *  Row labels go in their own narrow SVG, so they stay in view while wide sums scroll. */
export function drawSteps(svg, labels, trace) {
  svg.replaceChildren();
  labels.replaceChildren();
  const steps = trace.length;
  const units = steps ? trace[0].hidden.length : 0;
  const x = (t) => (steps - 1 - t) * CELL; // most significant step on the left
  const rows = [
    ["step", (s, t) => String(t), "index"],
    ["carry in", (s) => String(s.carry), "bit"],
    ["a", (s) => String(s.a), "bit"],
    ["b", (s) => String(s.b), "bit"],
    ["true sum", (s) => String(s.target), "bit target"],
    ["p(1)", (s) => s.probability.toFixed(2).replace(/^0/, ""), "prob"],
    ["model bit", (s) => String(s.bit), "bit predicted"],
  ];
  const top = rows.length * ROW + 6;
  const height = top + units * UNIT + 4;
  svg.setAttribute("width", steps * CELL);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${steps * CELL} ${height}`);
  labels.setAttribute("width", LABEL);
  labels.setAttribute("height", height);
  labels.setAttribute("viewBox", `0 0 ${LABEL} ${height}`);
  rows.forEach(([label, text, kind], r) => {
    const y = r * ROW;
    labels.append(el("text", { x: 4, y: y + 15, class: "row-label" }, label));
    const row = el("g", { class: `row ${kind.split(" ")[0]}`, "data-row": label });
    trace.forEach((step, t) => {
      const cell = el("g", { "data-step": t });
      if (kind === "prob") {
        cell.append(el("rect", { x: x(t) + 1, y: y + 2, width: CELL - 2, height: ROW - 4,
                                 fill: heat(step.probability), rx: 2 }));
        cell.append(el("title", {}, `step ${t}: p(sum bit = 1) = ${step.probability}`));
      }
      const wrong = kind.includes("predicted") && step.bit !== step.target;
      const light = kind === "prob" && step.probability < 0.6;
      cell.append(el("text", { x: x(t) + CELL / 2, y: y + 15, "text-anchor": "middle",
                               class: wrong ? "wrong" : light ? "on-dark" : "" },
                     text(step, t)));
      row.append(cell);
    });
    svg.append(row);
  });
  labels.append(el("text", { x: 4, y: top + 10, class: "row-label" }, "hidden units"));
  const map = el("g", { class: "heatmap" });
  trace.forEach((step, t) => {
    step.hidden.forEach((value, u) => {
      const rect = el("rect", { x: x(t), y: top + u * UNIT, width: CELL, height: UNIT,
                                fill: heat(value) });
      rect.append(el("title", {}, `step ${t}, unit ${u}: ${value.toFixed(3)}`));
      map.append(rect);
    });
  });
  svg.append(map);
}

/** Loss and batch accuracy against training step, drawn from the model record's history. */
export function drawCurve(svg, history) {
  svg.replaceChildren();
  const width = 320;
  const height = 180;
  const pad = { left: 40, right: 40, top: 10, bottom: 28 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const points = (history || []).filter((h) => Number.isFinite(h.step) && Number.isFinite(h.loss));
  if (points.length === 0) {
    svg.append(el("text", { x: 10, y: 30 }, "no training history recorded"));
    return;
  }
  const lastStep = Math.max(...points.map((p) => p.step));
  const firstStep = Math.min(...points.map((p) => p.step));
  const maxLoss = Math.max(...points.map((p) => p.loss)) || 1;
  const sx = (s) => pad.left + ((s - firstStep) / Math.max(1, lastStep - firstStep))
    * (width - pad.left - pad.right);
  const sy = (v, max) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
  const axis = { class: "axis" };
  svg.append(el("line", { ...axis, x1: pad.left, y1: height - pad.bottom,
                          x2: width - pad.right, y2: height - pad.bottom }));
  svg.append(el("line", { ...axis, x1: pad.left, y1: pad.top, x2: pad.left,
                          y2: height - pad.bottom }));
  svg.append(el("line", { ...axis, x1: width - pad.right, y1: pad.top, x2: width - pad.right,
                          y2: height - pad.bottom }));
  const tick = (x, y, text, anchor) => svg.append(
    el("text", { x, y, "text-anchor": anchor, class: "tick" }, text));
  tick(pad.left, height - pad.bottom + 14, String(firstStep), "middle");
  tick(width - pad.right, height - pad.bottom + 14, String(lastStep), "middle");
  tick(width / 2, height - 4, "training step", "middle");
  tick(pad.left - 4, pad.top + 8, maxLoss.toPrecision(2), "end");
  tick(pad.left - 4, height - pad.bottom, "0", "end");
  tick(width - pad.right + 4, pad.top + 8, "100%", "start");
  tick(width - pad.right + 4, height - pad.bottom, "0%", "start");
  const path = (values, max) => values
    .map((p, i) => `${i ? "L" : "M"}${sx(p.step).toFixed(1)},${sy(p.value, max).toFixed(1)}`)
    .join(" ");
  const accuracy = points.filter((p) => Number.isFinite(p.batch_accuracy))
    .map((p) => ({ step: p.step, value: p.batch_accuracy }));
  svg.append(el("path", { d: path(accuracy, 1), class: "accuracy" }));
  svg.append(el("path", { d: path(points.map((p) => ({ step: p.step, value: p.loss })), maxLoss),
                          class: "loss" }));
}
