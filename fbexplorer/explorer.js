// The explorer's browser side (fbexplorer/view.py's ExplorerView): it draws one
// node's trace and plays it with no round trip to the kernel.
//
// Traits read from the model:
//   t, epoch        the step shown, and an index into data.epochs
//   panel           the open tab: a key of PANELS
//   unrolled        show unrolled_graph (a window of steps around t) instead of graph
//   controls        draw a Play button and sliders here (a standalone page)
//   graph           {svg, targets: {node: {kind: "node" | "edge", ids: [svg ids]}}}
//   unrolled_graph  {svg, window, clusters: [[k, id]], targets: [[node, k, kind, id]]}
//                   (both SVGs are shown through safeSvg: parsed as XML, no script, event
//                   attribute or link kept; every name is set as text, never as HTML)
//   data            the frames; arrays are base64 float32, C order; E epochs (1
//                   without a TraceCallback), T steps, U units, N coloured nodes:
//     length T, epochs [E epoch numbers] or [], node, sample, units U, title,
//     runs [{name, dash, values (E, T, U)}]  lines of the chosen node (one run, or
//                                            stateful and stateless),
//     difference      the readout adds runs[0] - runs[1],
//     boundaries      steps where a chunk starts (dotted lines),
//     colour {by, names [N], values (E, N, T), range [lo, hi]}  box fills,
//     size {names [N], values (E, N, T), max}  widths of the delayed edges,
//     panels {name: anything}  data of further panels (see PANELS):
//       portrait {nodes, variance [2], coords (E, T, 2), fixed (P, 2), stable [P],
//                 fixed_epoch}  the model's state on 2 principal components (one basis
//                 for every epoch); fixed points, if any, drawn at fixed_epoch, as
//                 marks [{epoch, points [P: [x, y]], kinds [P] (stable, unstable,
//                 marginal, slow), info [P: {row, stability, spectral_radius, tau,
//                 period, readout, ...}], orbits [[row, [[x, y]]]], arrows [[row,
//                 [x, y], [dx, dy]]], attractors {points, kinds, info, orbits}}]
//                 (fbexplorer/portrait_marks.py; null where not finite); marks of
//                 a TraceCallback's census per epoch come as `census` (censusMarks).
//       track [{name, role (input, target, output), units, epochs, values (E or 1,
//                 T, units)}]  drawn above the trajectories on the same time axis.
//                 census [E: null | {fixed_points: {points (P, 2), stability [P],
//                 slow [P], spectral_radius [P], tau [P]}, attractors: {points (A, 2),
//                 kind [A], period [A], share [A]}}]: what a TraceCallback found at
//                 each epoch, with that epoch's weights (non-finite numbers are null).
//       training {epochs [K], metrics {name: [K]}, recorded [E epoch numbers]}
//                 Keras's logs per epoch (a TraceCallback's), drawn by the training tab.
//
// While a TraceCallback records (live), data grows by an epoch at a time: where the view
// showed the newest epoch, it moves to the new one (and the epoch slider with it).
//
// A panel is one entry of PANELS: {label, available(data), build(box, view)}; build
// draws into `box` and returns {epoch(e), step(t)}, called when the epoch or the
// step changes. `view` has data, the decoded runs, T, U, E, t and epoch.
// A panel fed from data.panels[name] (Explorer._panel_data on the Python side) is
// available only when that data is there, as the portrait is.

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const MARK = "#d95f02";
const SVGNS = "http://www.w3.org/2000/svg";
const STEP_PX = 240;  // the unrolled view's least width per step
const UNROLLED_SCALE = 0.8;  // of the drawing's own size: its text at about 15 px
const WIDE = 8;  // a node with more units shows them as the table's columns

function floats(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

// A diverging scale, blue (low) - near white (0) - red (high); lo >= 0 uses the red half.
const BLUE = [33, 102, 172], WHITE = [247, 247, 247], RED = [178, 24, 43];
function mix(a, b, f) {
  return `rgb(${a.map((x, i) => Math.round(x + (b[i] - x) * f)).join(",")})`;
}
export function colour(v, lo, hi) {
  if (!Number.isFinite(v)) return null;
  if (lo >= 0) return mix(WHITE, RED, hi > lo ? Math.min(1, Math.max(0, (v - lo) / (hi - lo))) : 0);
  const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  const f = Math.max(-1, Math.min(1, v / m));
  return f >= 0 ? mix(WHITE, RED, f) : mix(WHITE, BLUE, -f);
}

function svg(tag, attrs = {}, parent = null) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function html(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function fmt(v) {  // 4 significant digits
  return Number.isFinite(v) ? Number(v.toPrecision(4)).toString() : "";
}

// The hover's box: one per view, its lines set as text; `data` lands in its dataset
// (what the browser tests read).
function makeTip(el) {
  const tip = html("div", "fbx-tip", el);
  tip.style.display = "none";
  return {
    el: tip,
    show(event, lines, data = {}) {
      tip.replaceChildren(...lines.map((line) => html("div", "", null, String(line))));
      for (const k of Object.keys(tip.dataset)) delete tip.dataset[k];
      Object.assign(tip.dataset, data);
      const r = el.getBoundingClientRect();
      tip.style.left = `${event.clientX - r.left + 14}px`;
      tip.style.top = `${event.clientY - r.top + 12}px`;
      tip.style.display = "";
    },
    hide() { tip.style.display = "none"; },
  };
}

// The drawings are SVG text that Graphviz made from names a user or a file chose, so the
// page does not trust them: parsed as XML (never HTML), only the elements and attributes a
// drawing needs are kept, with no event attribute, no link (an <a> keeps its tooltip, not
// its href), no `style` and no CSS that could fetch (a function other than url(#id) and a
// transform's, or a CSS escape: `\75 rl(` reads as `url(`). Returns the <svg> element, or
// null where the text is no SVG.
const SVG_TAGS = new Set(["svg", "g", "title", "desc", "defs", "path", "polygon", "polyline",
  "ellipse", "circle", "rect", "line", "text", "tspan", "a", "linearGradient", "radialGradient", "stop"]);
const SVG_ATTRIBUTES = new Set(["id", "class", "width", "height", "viewBox", "version",
  "preserveAspectRatio", "transform", "points", "d", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy",
  "r", "rx", "ry", "fill", "fill-opacity", "stroke", "stroke-width", "stroke-dasharray",
  "stroke-opacity", "font-family", "font-size", "font-weight", "font-style", "text-anchor",
  "text-decoration", "title", "target", "offset", "stop-color", "stop-opacity", "gradientUnits",
  "gradientTransform"]);
const NOT_CSS = new Set(["id", "class", "title", "target"]);  // text, never read as CSS
const XMLNS = "http://www.w3.org/2000/xmlns/";

function unsafeAttribute(attr) {
  const name = attr.localName;
  if (attr.namespaceURI === XMLNS) return false;  // xmlns, xmlns:xlink
  if (!SVG_ATTRIBUTES.has(name)) return true;  // on*, href, src, style, ...
  if (NOT_CSS.has(name)) return false;  // a tooltip may read "javascript:...": it is text
  const value = attr.value;
  if (/^(javascript|data|vbscript):/i.test(value.replace(/[\s\u0000-\u001f]+/g, ""))) return true;
  if (/transform$/i.test(name)) return !/^[\w\s.,()+-]*$/.test(value);  // scale(1 1) rotate(0)
  return value.includes("\\") || (value.includes("(") && !/^\s*url\(#[\w.:~-]+\)\s*$/.test(value));
}

function cleanSvg(el) {
  for (const child of Array.from(el.children)) {
    if (child.namespaceURI === SVGNS && SVG_TAGS.has(child.localName)) cleanSvg(child);
    else child.remove();
  }
  for (const attr of Array.from(el.attributes)) {
    if (unsafeAttribute(attr)) el.removeAttributeNode(attr);
  }
}

export function safeSvg(text) {
  if (!text) return null;
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (doc.getElementsByTagName("parsererror").length || root.namespaceURI !== SVGNS ||
      root.localName !== "svg") return null;
  cleanSvg(root);
  return document.importNode(root, true);
}

// ------------------------------------------------------------------ panels
function extent(arrays) {  // of the finite values only
  let lo = Infinity, hi = -Infinity;
  for (const a of arrays) for (const v of a) { if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } }
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  return [lo, hi];
}

// Round ticks over [lo, hi]: steps of 1, 2 or 5 times a power of ten, about n of them.
// Returns {values, text}: each tick and its label, with as many decimals as the step needs.
export function ticks(lo, hi, n = 5) {
  if (!(hi > lo) || !Number.isFinite(lo) || !Number.isFinite(hi)) return { values: [], text: [] };
  const raw = (hi - lo) / n, p = 10 ** Math.floor(Math.log10(raw)), f = raw / p;
  const step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const values = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) values.push(k * step);
  return { values, text: values.map((v) => (Math.abs(v) < step * 1e-9 ? 0 : v).toFixed(digits)) };
}

// Axes in a plot box {L, R, TOP, B, W, H}: grid lines at round ticks, their labels, and
// the axis titles. x and y map data to pixels; xr and yr are the data ranges shown.
function drawAxes(root, box, x, y, xr, yr, xlabel, ylabel, n = [8, 5]) {
  const g = svg("g", { class: "fbx-axes" }, root);
  const { L, R, TOP, B, W, H } = box;
  svg("rect", { x: L, y: TOP, width: W - L - R, height: H - TOP - B, fill: "none", stroke: "#ccc" }, g);
  const xt = ticks(xr[0], xr[1], n[0]), yt = ticks(yr[0], yr[1], n[1]);
  xt.values.forEach((v, i) => {
    svg("line", { x1: x(v), x2: x(v), y1: TOP, y2: H - B, stroke: "#f0f0f0" }, g);
    svg("text", { x: x(v), y: H - B + 13, "text-anchor": "middle", class: "fbx-tick" }, g).textContent = xt.text[i];
  });
  yt.values.forEach((v, i) => {
    svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: v === 0 ? "#d8d8d8" : "#f0f0f0" }, g);
    svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end", class: "fbx-tick" }, g).textContent = yt.text[i];
  });
  svg("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle", class: "fbx-axis-label" }, g).textContent = xlabel;
  svg("text", { x: 11, y: (TOP + H - B) / 2, "text-anchor": "middle", class: "fbx-axis-label",
    transform: `rotate(-90 11 ${(TOP + H - B) / 2})` }, g).textContent = ylabel;
  return g;
}

// The pointer's position in an SVG's own coordinates (its viewBox).
function pointer(root, event) {
  const r = root.getBoundingClientRect();
  const vb = root.viewBox.baseVal;
  return [(event.clientX - r.left) * (vb.width / r.width), (event.clientY - r.top) * (vb.height / r.height)];
}

// The points of polylines through point(0 .. n-1) ([x, y] in pixels): a NaN
// or inf value leaves a gap, so a diverging run is drawn where it is finite.
function segments(n, point) {
  const out = [];
  let run = [];
  for (let i = 0; i < n; i++) {
    const [px, py] = point(i);
    if (Number.isFinite(px) && Number.isFinite(py)) run.push(`${px.toFixed(1)},${py.toFixed(1)}`);
    else if (run.length) { out.push(run.join(" ")); run = []; }
  }
  if (run.length || !out.length) out.push(run.join(" "));
  return out;
}

// The input / target / output track above the trajectories: one small plot on the
// same time axis, inputs grey, targets dashed black, outputs orange; hover reads all.
const TRACK = { input: ["#888", "none"], target: ["#222", "4,3"], output: [MARK, "none"] };
function drawTrack(box, view, tracks, W, L, R, tip) {
  const { T } = view;
  const H = 92, TOP = 6, B = 20;
  const frame = { L, R, TOP, B, W, H };
  const decoded = tracks.map((k) => ({ ...k, values: floats(k.values) }));
  const [lo, hi] = extent(decoded.map((k) => k.values));
  const x = (t) => L + (T > 1 ? (t / (T - 1)) * (W - L - R) : (W - L - R) / 2);
  const y = (v) => TOP + (1 - (v - lo) / (hi - lo)) * (H - TOP - B);
  const key = html("div", "fbx-track-key", box);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "fbx-track", width: W, height: H }, box);
  drawAxes(root, frame, x, y, [0, T - 1], [lo, hi], "", "", [8, 3]);
  const lines = svg("g", {}, root);
  const marker = svg("line", { y1: TOP, y2: H - B, stroke: MARK, "stroke-width": 1.5, class: "fbx-marker" }, root);
  for (const k of decoded) {
    const item = html("span", "", key, `${k.role} ${k.name}`);
    item.style.borderBottom = `2px ${k.role === "target" ? "dashed" : "solid"} ${TRACK[k.role][0]}`;
  }
  const at = (k, e, t, u) => k.values[((k.epochs ? e : 0) * T + t) * k.units + u];
  let epoch = 0;
  root.addEventListener("mousemove", (event) => {
    const t = Math.max(0, Math.min(T - 1, Math.round(((pointer(root, event)[0] - L) / (W - L - R)) * (T - 1))));
    const text = [`t=${t}`];
    for (const k of decoded) {
      const vals = Array.from({ length: k.units }, (_, u) => fmt(at(k, epoch, t, u)));
      text.push(`${k.role} ${k.name}: ${vals.join(", ")}`);
    }
    tip.show(event, text, { t });
  });
  root.addEventListener("mouseleave", () => tip.hide());
  return {
    epoch(e) {
      epoch = e;
      lines.replaceChildren();
      for (const k of decoded) {
        for (let u = 0; u < k.units; u++) {
          for (const points of segments(T, (t) => [x(t), y(at(k, e, t, u))])) {
            svg("polyline", { points, fill: "none", stroke: TRACK[k.role][0], "stroke-width": 1.4,
              "stroke-dasharray": TRACK[k.role][1], "data-role": k.role }, lines);
          }
        }
      }
    },
    step(t) { marker.setAttribute("x1", x(t)); marker.setAttribute("x2", x(t)); },
  };
}

// A fixed point's or attractor's hover: "fixed point 2: unstable, spectral radius 1.31, ...".
export function infoText(info, what) {
  const parts = [info.stability || info.kind];
  for (const [key, label] of [["spectral_radius", "spectral radius"], ["tau", "tau"],
    ["share", "share"], ["max_lyapunov", "max Lyapunov"]]) {
    const v = info[key];
    if (v === null || v === undefined) continue;
    parts.push(`${label} ${typeof v === "string" ? v : fmt(v)}${key === "tau" ? " steps" : ""}`);
  }
  if ((info.period || 1) > 1) parts.push(`period ${info.period}`);
  if (info.readout) parts.push(info.readout);
  return [`${what} ${info.row}`, parts.filter(Boolean).join(", ")];
}

const FIXED = "#d62728", ATTRACTOR = "#333";
// One fixed point's symbol at (cx, cy): stable filled circle, unstable hollow circle,
// marginal hollow square, slow hollow diamond.
function pointSymbol(g, kind, cx, cy) {
  const common = { stroke: FIXED, "stroke-width": 1.6, "data-kind": kind };
  if (kind === "marginal") return svg("rect", { x: cx - 5, y: cy - 5, width: 10, height: 10, fill: "#fff", ...common }, g);
  if (kind === "slow") {
    return svg("polygon", { points: `${cx},${cy - 6} ${cx + 6},${cy} ${cx},${cy + 6} ${cx - 6},${cy}`, fill: "#fff", ...common }, g);
  }
  const stable = kind === "stable";
  return svg("circle", { cx, cy, r: 5, fill: stable ? FIXED : "#fff", "data-stable": stable, ...common }, g);
}

function arrow(g, x0, y0, dx, dy, length, colour) {
  const x1 = x0 + dx * length, y1 = y0 + dy * length;
  svg("line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: colour, "stroke-width": 1.5 }, g);
  const px = -dy * 3.5, py = dx * 3.5;
  svg("polygon", { points: `${x1 + dx * 6},${y1 + dy * 6} ${x1 + px},${y1 + py} ${x1 - px},${y1 - py}`, fill: colour }, g);
}

// The legend of what the portrait draws, only the symbols it shows.
function portraitLegend(box, items) {
  const key = html("div", "fbx-portrait-legend", box);
  for (const [kind, text] of items) {
    const item = html("span", "fbx-key", key);
    item.dataset.kind = kind;
    const s = svg("svg", { width: 26, height: 14, viewBox: "-13 -7 26 14" }, item);
    if (kind === "path") svg("line", { x1: -12, x2: 12, y1: 0, y2: 0, stroke: PALETTE[0], "stroke-width": 1.5 }, s);
    else if (kind === "start") svg("rect", { x: -3, y: -3, width: 6, height: 6, fill: PALETTE[0] }, s);
    else if (kind === "t") svg("circle", { r: 5, fill: MARK, stroke: "#333" }, s);
    else if (kind === "orbit") svg("polygon", { points: "-10,5 0,-6 10,5", fill: "none", stroke: FIXED, "stroke-width": 1.5 }, s);
    else if (kind === "arrows") { arrow(s, 0, 0, 1, 0, 4, FIXED); arrow(s, 0, 0, -1, 0, 4, FIXED); }
    else if (kind === "attractor") {
      svg("path", { d: "M-5,-5 L5,5 M-5,5 L5,-5", stroke: ATTRACTOR, "stroke-width": 2 }, s);
    } else pointSymbol(s, kind, 0, 0);
    item.append(text);
  }
}

const PANELS = {
  trajectories: {
    label: "trajectories",
    available: () => true,
    build(box, view) {
      const { T, U, runs } = view;
      const W = 720, H = 260, L = 54, R = 12, TOP = 10, B = 34;
      const tracks = (view.data.panels || {}).track;
      const track = tracks && tracks.length ? drawTrack(box, view, tracks, W, L, R, view.tip) : null;
      const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "fbx-lines", width: W, height: H }, box);
      const [lo, hi] = extent(runs.map((r) => r.values));
      const x = (t) => L + (T > 1 ? (t / (T - 1)) * (W - L - R) : (W - L - R) / 2);
      const y = (v) => TOP + (1 - (v - lo) / (hi - lo)) * (H - TOP - B);
      drawAxes(root, { L, R, TOP, B, W, H }, x, y, [0, T - 1], [lo, hi], "t (step)", `${view.data.node}`);
      for (const b of view.data.boundaries || []) {
        svg("line", { x1: x(b - 0.5), x2: x(b - 0.5), y1: TOP, y2: H - B, stroke: "#888", "stroke-dasharray": "2,3", class: "fbx-boundary" }, root);
      }
      const lines = svg("g", {}, root);
      const marker = svg("line", { y1: TOP, y2: H - B, stroke: MARK, "stroke-width": 2, class: "fbx-marker" }, root);
      const dot = svg("circle", { r: 4, fill: "none", stroke: "#222", "stroke-width": 1.5, class: "fbx-hover-dot" }, root);
      dot.style.display = "none";
      let epoch = 0;
      root.addEventListener("mousemove", (event) => {
        const [px, py] = pointer(root, event);
        const t = Math.max(0, Math.min(T - 1, Math.round(((px - L) / (W - L - R)) * (T - 1))));
        let best = null;
        runs.forEach((run) => {
          for (let u = 0; u < U; u++) {
            const v = run.values[epoch * T * U + t * U + u];
            if (Number.isFinite(v) && (!best || Math.abs(y(v) - py) < best.d)) best = { d: Math.abs(y(v) - py), u, v, run };
          }
        });
        if (!best) { view.tip.hide(); dot.style.display = "none"; return; }
        const run = runs.length > 1 ? ` (${best.run.name})` : "";
        dot.style.display = "";
        dot.setAttribute("cx", x(t)); dot.setAttribute("cy", y(best.v));
        view.tip.show(event, [`unit ${best.u}${run}`, `t=${t}: ${fmt(best.v)}`], { t, unit: best.u, value: fmt(best.v) });
      });
      root.addEventListener("mouseleave", () => { view.tip.hide(); dot.style.display = "none"; });
      return {
        epoch(e) {
          epoch = e;
          if (track) track.epoch(e);
          lines.replaceChildren();
          runs.forEach((run) => {
            for (let u = 0; u < U; u++) {
              const off = e * T * U + u;
              for (const points of segments(T, (t) => [x(t), y(run.values[off + t * U])])) {
                svg("polyline", {
                  points, fill: "none", stroke: PALETTE[u % PALETTE.length],
                  "stroke-width": 1.3, "stroke-dasharray": run.dash ? "5,3" : "none",
                  "data-unit": u, "data-run": run.name,
                }, lines);
              }
            }
          });
        },
        step(t) {
          if (track) track.step(t);
          marker.setAttribute("x1", x(t));
          marker.setAttribute("x2", x(t));
          marker.dataset.t = t;
        },
      };
    },
  },
  heatmap: {
    label: "heatmap",
    available: () => true,
    build(box, view) {
      const { T, U, runs } = view;
      const run = runs[0];
      const wrap = html("div", "fbx-heat", box);
      html("div", "fbx-heat-label", wrap, `units (rows) x t (columns), ${run.name}; hover for a value`);
      const area = html("div", "fbx-heat-area", wrap);
      const canvas = html("canvas", "", area);
      canvas.width = T; canvas.height = U;
      canvas.style.height = `${Math.max(60, Math.min(260, U * 10))}px`;
      const marker = html("div", "fbx-heat-marker fbx-marker", area);
      const axis = svg("svg", { viewBox: "0 0 640 16", width: 640, height: 16, class: "fbx-heat-axis" }, wrap);
      const tt = ticks(0, T - 1, 8);  // round steps at the cells' centres
      tt.values.forEach((v, i) => {
        if (Number.isInteger(v)) svg("text", { x: ((v + 0.5) / T) * 640, y: 12, "text-anchor": "middle", class: "fbx-tick" }, axis).textContent = tt.text[i];
      });
      const [lo, hi] = extent([run.values]);
      const m = Math.max(Math.abs(lo), Math.abs(hi));
      html("div", "fbx-heat-label", wrap, `colour: -${fmt(m)} (blue) to ${fmt(m)} (red)`);
      const ctx = canvas.getContext("2d");
      let epoch = 0;
      canvas.addEventListener("mousemove", (event) => {
        const r = canvas.getBoundingClientRect();
        const t = Math.max(0, Math.min(T - 1, Math.floor(((event.clientX - r.left) / r.width) * T)));
        const u = Math.max(0, Math.min(U - 1, Math.floor(((event.clientY - r.top) / r.height) * U)));
        const v = run.values[epoch * T * U + t * U + u];
        view.tip.show(event, [`unit ${u}, t=${t}`, fmt(v)], { t, unit: u, value: fmt(v) });
      });
      canvas.addEventListener("mouseleave", () => view.tip.hide());
      return {
        epoch(e) {
          epoch = e;
          const img = ctx.createImageData(T, U);
          for (let u = 0; u < U; u++) {
            for (let t = 0; t < T; t++) {
              const c = (colour(run.values[e * T * U + t * U + u], -m, m) || "rgb(200,200,200)").match(/\d+/g);
              const i = 4 * (u * T + t);
              img.data[i] = +c[0]; img.data[i + 1] = +c[1]; img.data[i + 2] = +c[2]; img.data[i + 3] = 255;
            }
          }
          ctx.putImageData(img, 0, 0);
        },
        step(t) {
          marker.style.left = `${(100 * (t + 0.5)) / T}%`;
          marker.dataset.t = t;
        },
      };
    },
  },
  portrait: {
    label: "portrait",
    available: (d) => !!(d.panels && d.panels.portrait),
    build(box, view) { return buildPortrait(box, view); },
  },
};

// A TraceCallback's census per epoch (portrait.census: [E: null | {fixed_points,
// attractors}]) as marks of those epochs, drawn as the marks given with fixed_points=.
function censusMarks(census) {
  const pairs = (b64) => { const a = floats(b64); return Array.from({ length: a.length / 2 }, (_, i) => [a[2 * i], a[2 * i + 1]]); };
  return (census || []).flatMap((c, epoch) => {
    if (!c) return [];
    const m = { epoch, points: [], kinds: [], info: [], orbits: [], arrows: [] };
    const f = c.fixed_points;
    if (f) {
      m.points = pairs(f.points);
      m.kinds = m.points.map((_, i) => (f.slow && f.slow[i] ? "slow" : f.stability[i]));
      m.info = m.points.map((_, i) => ({ row: i, kind: m.kinds[i], stability: f.stability[i],
        spectral_radius: (f.spectral_radius || [])[i], tau: (f.tau || [])[i] }));
    }
    const a = c.attractors;
    if (a) {
      const points = pairs(a.points);
      m.attractors = { points, kinds: a.kind, orbits: [],
        info: points.map((_, i) => ({ row: i, kind: a.kind[i], period: (a.period || [])[i], share: (a.share || [])[i] })) };
    }
    return [m];
  });
}

// The portrait: the state on 2 principal components, at a useful size, with zoom (the
// wheel, or the buttons) and pan (drag); a double click or "reset" shows everything.
// Fixed points by kind, orbits, saddles' arrows and attractors (data.panels.portrait.marks,
// the entry of the epoch shown) on top, each with its hover.
function buildPortrait(box, view) {
  const p = view.data.panels.portrait;
  const { T } = view;
  const coords = floats(p.coords);  // (E, T, 2)
  const marks = [...(p.marks || []), ...censusMarks(p.census)];
  const W = 640, H = 470, L = 54, R = 12, TOP = 10, B = 36;
  const frame = { L, R, TOP, B, W, H };
  const bar = html("div", "fbx-portrait-bar", box);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "fbx-portrait", width: W, height: H }, box);
  const even = (a, k) => a.filter((_, i) => i % 2 === k);
  const markXY = marks.flatMap((m) => [...m.points, ...((m.attractors || {}).points || [])]);
  const pad = ([lo, hi]) => [lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo)];
  const full = [pad(extent([even(coords, 0), markXY.map((q) => q[0])])),
    pad(extent([even(coords, 1), markXY.map((q) => q[1])]))];
  let [xr, yr] = full;
  const x = (v) => L + ((v - xr[0]) / (xr[1] - xr[0])) * (W - L - R);
  const y = (v) => TOP + (1 - (v - yr[0]) / (yr[1] - yr[0])) * (H - TOP - B);
  const clip = `fbx-clip-${Math.random().toString(36).slice(2)}`;
  svg("rect", { x: L, y: TOP, width: W - L - R, height: H - TOP - B }, svg("clipPath", { id: clip }, svg("defs", {}, root)));
  const axes = svg("g", {}, root);
  const plot = svg("g", { "clip-path": `url(#${clip})` }, root);
  const line = svg("g", { class: "fbx-path" }, plot);  // polylines: gaps where not finite
  const start = svg("rect", { width: 6, height: 6, fill: PALETTE[0], class: "fbx-start" }, plot);
  const dyn = svg("g", { class: "fbx-dynamics" }, plot);
  const marker = svg("circle", { r: 6, fill: MARK, stroke: "#333", "stroke-width": 1.5, class: "fbx-marker" }, plot);
  const pc = (k) => `PC${k + 1} (${(100 * p.variance[k]).toFixed(1)}% of variance)`;
  let epoch = 0, t = 0;
  let at = (s) => [coords[2 * s], coords[2 * s + 1]];

  function hoverPoint(el, lines) {
    el.addEventListener("mousemove", (event) => { event.stopPropagation(); view.tip.show(event, lines, { point: lines[0] }); });
    el.addEventListener("mouseleave", () => view.tip.hide());
  }
  function drawMarks() {
    dyn.replaceChildren();
    const shown = marks.filter((m) => m.epoch === undefined || m.epoch === epoch);
    const orbits = svg("g", { class: "fbx-orbits" }, dyn);
    const arrows = svg("g", { class: "fbx-arrows" }, dyn);
    const fixed = svg("g", { class: "fbx-fixed" }, dyn);
    const attract = svg("g", { class: "fbx-attractors" }, dyn);
    for (const m of shown) {
      for (const [, o] of m.orbits) {
        svg("polygon", { points: o.map(([u, v]) => `${x(u)},${y(v)}`).join(" "), fill: "none", stroke: FIXED, "stroke-width": 1.5 }, orbits);
      }
      for (const [, [u, v], [du, dv]] of m.arrows) {
        // the direction in pixels (the axes' scales differ), 22 px each way
        let px = (du * (W - L - R)) / (xr[1] - xr[0]), py = (-dv * (H - TOP - B)) / (yr[1] - yr[0]);
        const n = Math.hypot(px, py) || 1;
        px /= n; py /= n;
        arrow(arrows, x(u), y(v), px, py, 16, FIXED);
        arrow(arrows, x(u), y(v), -px, -py, 16, FIXED);
      }
      m.points.forEach(([u, v], i) => {
        if (u === null || v === null) return;
        const el = pointSymbol(fixed, m.kinds[i], x(u), y(v));
        hoverPoint(el, infoText(m.info[i], m.kinds[i] === "slow" ? "slow point" : "fixed point"));
      });
      const a = m.attractors;
      if (!a) continue;
      for (const [, o] of a.orbits) {
        svg("polygon", { points: o.map(([u, v]) => `${x(u)},${y(v)}`).join(" "), fill: "none", stroke: ATTRACTOR, "stroke-width": 1.5, "stroke-dasharray": "4,2" }, attract);
      }
      a.points.forEach(([u, v], i) => {
        const g = svg("g", { class: "fbx-attractor", "data-kind": a.kinds[i] }, attract);
        svg("path", { d: `M${x(u) - 6},${y(v) - 6} L${x(u) + 6},${y(v) + 6} M${x(u) - 6},${y(v) + 6} L${x(u) + 6},${y(v) - 6}`, stroke: ATTRACTOR, "stroke-width": 2.5 }, g);
        svg("circle", { cx: x(u), cy: y(v), r: 8, fill: "transparent" }, g);  // a target for the hover
        hoverPoint(g, infoText(a.info[i], "attractor"));
      });
    }
  }
  function drawPath() {
    line.replaceChildren();
    for (const points of segments(T, (s) => { const [u, v] = at(s); return [x(u), y(v)]; })) {
      svg("polyline", { points, fill: "none", stroke: PALETTE[0], "stroke-width": 1.3 }, line);
    }
    line.dataset.epoch = epoch;
    const [u, v] = at(0);
    start.style.display = Number.isFinite(u + v) ? "" : "none";
    start.setAttribute("x", x(u) - 3);
    start.setAttribute("y", y(v) - 3);
  }
  function place() {
    const [u, v] = at(t);
    marker.style.display = Number.isFinite(u + v) ? "" : "none";
    marker.setAttribute("cx", x(u));
    marker.setAttribute("cy", y(v));
    marker.dataset.t = t;
  }
  function redraw() {
    axes.replaceChildren();
    drawAxes(axes, frame, x, y, xr, yr, pc(0), pc(1));
    root.dataset.zoom = ((full[0][1] - full[0][0]) / (xr[1] - xr[0])).toFixed(3);
    drawPath(); drawMarks(); place();
  }
  function zoom(f, cu, cv) {  // by f about the data point (cu, cv)
    xr = [cu + (xr[0] - cu) / f, cu + (xr[1] - cu) / f];
    yr = [cv + (yr[0] - cv) / f, cv + (yr[1] - cv) / f];
    redraw();
  }
  const centre = () => [(xr[0] + xr[1]) / 2, (yr[0] + yr[1]) / 2];
  for (const [label, f] of [["+", 1.5], ["\u2212", 1 / 1.5]]) {
    const b = html("button", "fbx-zoom", bar, label);
    b.title = f > 1 ? "zoom in" : "zoom out";
    b.onclick = () => zoom(f, ...centre());
  }
  const reset = html("button", "fbx-zoom-reset", bar, "reset");
  reset.onclick = () => { [xr, yr] = full; redraw(); };
  html("span", "fbx-portrait-hint", bar, " wheel: zoom, drag: pan, hover: values");
  const data = ([px, py]) => [xr[0] + ((px - L) / (W - L - R)) * (xr[1] - xr[0]), yr[0] + (1 - (py - TOP) / (H - TOP - B)) * (yr[1] - yr[0])];
  root.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoom(event.deltaY < 0 ? 1.25 : 1 / 1.25, ...data(pointer(root, event)));
  }, { passive: false });
  let drag = null;
  root.addEventListener("mousedown", (event) => { drag = pointer(root, event); event.preventDefault(); });
  window.addEventListener("mouseup", () => { drag = null; });
  root.addEventListener("dblclick", () => { [xr, yr] = full; redraw(); });
  root.addEventListener("mousemove", (event) => {
    const q = pointer(root, event);
    if (drag) {
      const [a, b] = data(drag), [c, d] = data(q);
      xr = [xr[0] + a - c, xr[1] + a - c]; yr = [yr[0] + b - d, yr[1] + b - d];
      drag = q;
      redraw();
      return;
    }
    let best = null;  // the path's nearest point, within 10 px
    for (let s = 0; s < T; s++) {
      const [u, v] = at(s);
      const d = Math.hypot(x(u) - q[0], y(v) - q[1]);
      if (d < 10 && (!best || d < best.d)) best = { d, s, u, v };
    }
    if (best) view.tip.show(event, [`t=${best.s}`, `PC1 ${fmt(best.u)}, PC2 ${fmt(best.v)}`], { t: best.s });
    else view.tip.hide();
  });
  root.addEventListener("mouseleave", () => view.tip.hide());
  const kinds = new Set(marks.flatMap((m) => m.kinds));
  const items = [["path", `sample ${view.data.sample}`], ["start", "start"], ["t", "t"]];
  for (const [k, text] of [["stable", "stable"], ["unstable", "unstable"], ["marginal", "marginal"], ["slow", "slow point"]]) {
    if (kinds.has(k)) items.push([k, text]);
  }
  if (marks.some((m) => m.orbits.length)) items.push(["orbit", "cycle (orbit)"]);
  if (marks.some((m) => m.arrows.length)) items.push(["arrows", "saddle: unstable directions"]);
  if (marks.some((m) => m.attractors && m.attractors.points.length)) items.push(["attractor", "attractor (census)"]);
  portraitLegend(box, items);
  html("div", "fbx-portrait-label", box,
    `state ${p.nodes.join(", ")} on its principal components` + (p.stable ? "; fixed points: stable filled, unstable hollow" : ""));
  return {
    epoch(e) {
      epoch = e;
      const off = e * T * 2;
      at = (s) => [coords[off + 2 * s], coords[off + 2 * s + 1]];
      redraw();
    },
    step(s) { t = s; place(); },
  };
}

// The training tab: Keras's logs (loss, metrics) per epoch, the recorded epochs as
// ticks, a marker at the epoch shown. Each metric on its own scale (min to max).
PANELS.training = {
  label: "training",
  available: (d) => !!(d.panels && d.panels.training),
  build(box, view) {
    const p = view.data.panels.training;
    const W = 680, H = 200, L = 48, R = 140, TOP = 10, B = 26;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "fbx-training", width: W, height: H }, box);
    const ks = p.epochs, n = ks.length;
    const [k0, k1] = [Math.min(0, ...ks), Math.max(1, ...ks)];
    const x = (k) => L + ((k - k0) / (k1 - k0)) * (W - L - R);
    svg("rect", { x: L, y: TOP, width: W - L - R, height: H - TOP - B, fill: "none", stroke: "#ccc" }, root);
    for (const k of [k0, Math.round((k0 + k1) / 2), k1]) {
      svg("text", { x: x(k), y: H - 8, "text-anchor": "middle", class: "fbx-tick" }, root).textContent = k;
    }
    for (const k of p.recorded) svg("line", { x1: x(k), x2: x(k), y1: H - B, y2: H - B + 4, stroke: "#888" }, root);
    Object.entries(p.metrics).forEach(([name, values], i) => {
      const [lo, hi] = extent([values.map((v) => (v === null ? NaN : v))]);
      const y = (v) => TOP + (1 - (v - lo) / (hi - lo)) * (H - TOP - B);
      const colour = PALETTE[i % PALETTE.length];
      for (const points of segments(n, (j) => [x(ks[j]), values[j] === null ? NaN : y(values[j])])) {
        svg("polyline", { points, fill: "none", stroke: colour, "stroke-width": 1.5, "data-metric": name }, root);
      }
      const last = values[n - 1];
      svg("text", { x: W - R + 6, y: TOP + 14 * (i + 1), class: "fbx-tick", fill: colour }, root)
        .textContent = `${name} ${last === null ? "" : fmt(last)}`;
    });
    const marker = svg("line", { y1: TOP, y2: H - B, stroke: MARK, "stroke-width": 2, class: "fbx-marker" }, root);
    html("div", "fbx-portrait-label", box, "loss and metrics per epoch (each on its own scale); ticks: epochs traced");
    return {
      epoch(e) {
        const k = (view.data.epochs || [])[e] ?? 0;
        marker.setAttribute("x1", x(k));
        marker.setAttribute("x2", x(k));
        marker.dataset.epoch = k;
      },
      step() {},
    };
  },
};

// ------------------------------------------------------------------- graph
function shapesOf(group) {
  return Array.from(group.querySelectorAll("path, polygon, ellipse"))
    .filter((s) => s.getAttribute("fill") && s.getAttribute("fill") !== "none");
}

function paintBox(shapes, fill) {
  for (const s of shapes) {
    if (s.dataset.fill === undefined) s.dataset.fill = s.getAttribute("fill");
    s.setAttribute("fill", fill || s.dataset.fill);
  }
}

function sizeEdge(group, w) {
  for (const p of group.querySelectorAll("path")) {
    if (p.dataset.width === undefined) p.dataset.width = p.getAttribute("stroke-width") || "1";
    p.setAttribute("stroke-width", w === null ? p.dataset.width : w.toFixed(2));
  }
}

function render({ model, el }) {
  el.classList.add("fbx");
  el.replaceChildren();
  const top = html("div", "fbx-top", el);
  const graphBox = html("div", "fbx-graph", top);
  const side = html("div", "fbx-side", top);
  const legend = html("div", "fbx-legend", side);
  const toggleLabel = html("label", "fbx-toggle", side);
  const toggle = html("input", "", toggleLabel);
  toggle.type = "checkbox";
  toggleLabel.append(" unrolled steps around t");
  const controls = html("div", "fbx-controls", el);
  const tabs = html("div", "fbx-tabs", el);
  const panelBox = html("div", "fbx-panel", el);
  const readout = html("div", "fbx-readout", el);
  const tip = makeTip(el);

  const view = { data: null, runs: [], T: 1, U: 1, E: 1, t: 0, epoch: 0, tip };
  let colourValues = null, sizeValues = null, names = [], panel = null;
  let cyclic = [], unrolled = { targets: [], clusters: [], window: 1 };
  let playing = null, tInput = null, tLabel = null, eInput = null, eLabel = null;
  let follow = false;  // live: move to the epoch that just arrived

  function clampT(t) { return Math.max(0, Math.min(view.T - 1, t | 0)); }
  function clampE(e) { return Math.max(0, Math.min(view.E - 1, e | 0)); }

  // The page of the pickers' choice from `pages` (the pages explored, kept in the widget
  // state), where it differs from `data` and is there: a notebook exported with its
  // widget state switches node and sample with no kernel. Null where `data` is the
  // choice; false where the choice was not explored (the view keeps what it shows).
  function picked(key) {
    const p = model.get("pages") || {};
    const o = p.options;
    if (!o || !p.by_node) return null;
    const node = o.nodes[model.get("node_index")], sample = String(o.samples[model.get("sample_index")]);
    const d = model.get("data") || {};
    if (d.node === node && String(d.sample) === sample) return null;
    const part = (p.by_node[node] || {})[sample], shared = (p.by_sample || {})[sample];
    if (!part || !shared) return false;
    return key === "graph" ? (p.graphs || {})[node] || null : { ...p.common, ...shared, ...part };
  }

  function loadData() {
    const choice = picked("data");
    const d = choice || (choice === false && view.data) || model.get("data") || {};
    const [loaded, before] = [view.data !== null, view.E];
    view.data = d;
    view.T = d.length || 1;
    view.U = d.units || 1;
    view.E = Math.max(1, (d.epochs || []).length);
    // Live: a new epoch arrived; follow it (in all()) where the newest was shown.
    follow = loaded && view.E > before && model.get("epoch") === before - 1;
    view.runs = (d.runs || []).map((r) => ({ ...r, values: floats(r.values) }));
    names = d.colour ? d.colour.names : [];
    colourValues = d.colour ? floats(d.colour.values) : null;
    sizeValues = d.size ? floats(d.size.values) : null;
    drawLegend();
    drawControls();
    drawTabs();
  }

  function drawLegend() {
    const c = view.data.colour;
    legend.replaceChildren();
    if (!c) return;
    const [lo, hi] = c.range;
    const root = svg("svg", { width: 180, height: 44 }, legend);
    const grad = svg("linearGradient", { id: `fbx-grad-${Math.random().toString(36).slice(2)}` }, svg("defs", {}, root));
    for (let i = 0; i <= 10; i++) {
      svg("stop", { offset: `${i * 10}%`, "stop-color": colour(lo + ((hi - lo) * i) / 10, lo, hi) }, grad);
    }
    svg("rect", { x: 10, y: 4, width: 160, height: 12, fill: `url(#${grad.id})`, stroke: "#999" }, root);
    svg("text", { x: 10, y: 30, class: "fbx-tick" }, root).textContent = fmt(lo);
    svg("text", { x: 170, y: 30, "text-anchor": "end", class: "fbx-tick" }, root).textContent = fmt(hi);
    if (lo < 0) svg("text", { x: 90, y: 30, "text-anchor": "middle", class: "fbx-tick" }, root).textContent = "0";
    html("div", "fbx-legend-text", legend, `box fill: ${c.by} at t`);
    if (view.data.size) html("div", "fbx-legend-text", legend, "delayed edge width: norm of the carried value");
  }

  function drawControls() {
    controls.replaceChildren();
    if (!model.get("controls")) return;
    const play = html("button", "fbx-play", controls, "\u25B6 play");
    play.onclick = () => {
      if (playing) { stop(); return; }
      if (view.t >= view.T - 1) setT(0);
      play.textContent = "\u275A\u275A pause";
      playing = setInterval(() => {
        setT(view.t + 1);
        if (view.t >= view.T - 1) stop();  // stops at the last step, as ipywidgets' Play
      }, 100);
    };
    const stop = () => { clearInterval(playing); playing = null; play.textContent = "\u25B6 play"; };
    tInput = html("input", "fbx-t", controls);
    Object.assign(tInput, { type: "range", min: 0, max: view.T - 1, step: 1, value: view.t });
    tInput.oninput = () => setT(+tInput.value);
    tLabel = html("span", "fbx-t-label", controls);
    if (view.E > 1) {
      eInput = html("input", "fbx-epoch", controls);
      Object.assign(eInput, { type: "range", min: 0, max: view.E - 1, step: 1, value: view.epoch });
      eInput.oninput = () => { model.set("epoch", +eInput.value); model.save_changes(); };
      eLabel = html("span", "fbx-epoch-label", controls);
    } else {
      eInput = eLabel = null;
    }
  }

  function setT(t) {
    model.set("t", clampT(t));
    model.save_changes();
  }

  function drawTabs() {
    tabs.replaceChildren();
    for (const [name, p] of Object.entries(PANELS)) {
      if (!p.available(view.data)) continue;
      const b = html("button", "fbx-tab", tabs, p.label);
      b.dataset.panel = name;
      b.onclick = () => { model.set("panel", name); model.save_changes(); };
    }
    openPanel();
  }

  function openPanel() {
    let name = model.get("panel");
    if (!PANELS[name] || !PANELS[name].available(view.data)) name = "trajectories";
    for (const b of tabs.children) b.classList.toggle("fbx-active", b.dataset.panel === name);
    panelBox.replaceChildren();
    panelBox.dataset.panel = name;
    html("div", "fbx-title", panelBox, view.data.title || "");
    panel = view.runs.length ? PANELS[name].build(panelBox, view) : null;
    if (panel) panel.epoch(view.epoch);
  }

  function drawGraph() {
    const useUnrolled = model.get("unrolled") && (model.get("unrolled_graph") || {}).svg;
    const g = useUnrolled ? model.get("unrolled_graph") : picked("graph") || model.get("graph") || {};
    if (!useUnrolled && picked("graph") === false && graphBox.firstChild) return;  // kept, as the data
    toggle.checked = !!model.get("unrolled");
    const drawing = safeSvg(g.svg);
    graphBox.replaceChildren(...(drawing ? [drawing] : []));
    graphBox.dataset.view = useUnrolled ? "unrolled" : "cyclic";
    if (drawing && useUnrolled) {  // a fixed width per step: the window scrolls, never squeezes
      const natural = drawing.viewBox.baseVal.width * (4 / 3);  // Graphviz's points as pixels
      const perStep = Math.max(STEP_PX, (UNROLLED_SCALE * natural) / g.window);
      drawing.style.width = `${(perStep * g.window).toFixed(0)}px`;
      drawing.style.maxWidth = "none";
      graphBox.dataset.stepPx = perStep.toFixed(0);
    }
    const find = (id) => graphBox.querySelector(`[id="${CSS.escape(String(id))}"]`);
    cyclic = [];
    unrolled = { targets: [], clusters: [], window: 1 };
    if (useUnrolled) {
      unrolled.window = g.window;
      unrolled.clusters = g.clusters.map(([k, id]) => {
        const el = find(id);
        const label = el && el.querySelector("text");
        return { k, el, label, frame: el && el.querySelector("path, polygon") };
      });
      for (const [name, k, kind, id] of g.targets) {
        const el = find(id);
        const i = names.indexOf(name);
        if (!el || i < 0) continue;
        const texts = Array.from(el.querySelectorAll("text"));
        pickable(el, name, () => s0() + k);
        unrolled.targets.push({ i, k, kind, el, shapes: shapesOf(el), texts, orig: texts.map((x) => x.textContent) });
      }
    } else {
      for (const [name, target] of Object.entries(g.targets || {})) {
        const i = names.indexOf(name);
        if (i < 0) continue;
        for (const id of target.ids) {
          const el = find(id);
          if (el) cyclic.push({ i, kind: target.kind, el, shapes: shapesOf(el) });
          if (el) pickable(el, name, () => view.t);
        }
      }
    }
    paint();
  }

  // A box or edge of the drawing: a click selects its node (the notebook's node picker
  // follows the `selected` trait), a hover shows its value at its step.
  function pickable(el, name, stepOf) {
    el.classList.add("fbx-pick");
    el.dataset.node = name;
    el.addEventListener("click", () => {
      for (const other of graphBox.querySelectorAll(".fbx-selected")) other.classList.remove("fbx-selected");
      el.classList.add("fbx-selected");
      graphBox.dataset.selected = name;
      model.set("selected", name);
      model.save_changes();
    });
    el.addEventListener("mousemove", (event) => {
      const t = stepOf();
      const what = (view.data.colour || {}).by || "value";
      tip.show(event, [name, `t=${t}: ${el.dataset.value || "-"} (${what})`], { node: name, t, value: el.dataset.value || "" });
    });
    el.addEventListener("mouseleave", () => tip.hide());
  }

  function s0() {  // the first step of the unrolled window
    const W = unrolled.window;
    return Math.max(0, Math.min(view.T - W, view.t - Math.floor(W / 2)));
  }

  function value(arr, i, t) {
    return arr[(view.epoch * names.length + i) * view.T + t];
  }

  function styleTarget(target, t) {
    if (target.kind === "edge") {
      const max = (view.data.size || {}).max || 0;
      const v = sizeValues && t >= 0 && t < view.T ? value(sizeValues, target.i, t) : NaN;
      sizeEdge(target.el, Number.isFinite(v) && max > 0 ? 1 + (5 * v) / max : null);
      target.el.dataset.value = fmt(v);
    } else {
      const [lo, hi] = view.data.colour.range;
      const v = t >= 0 && t < view.T ? value(colourValues, target.i, t) : NaN;
      paintBox(target.shapes, colour(v, lo, hi));
      target.el.dataset.value = fmt(v);
    }
  }

  function paint() {
    if (!colourValues) return;
    const t = view.t;
    if (graphBox.dataset.view === "unrolled") {
      const W = unrolled.window;
      const s = Math.max(0, Math.min(view.T - W, t - Math.floor(W / 2)));
      graphBox.dataset.start = s;
      for (const c of unrolled.clusters) {
        if (c.label) c.label.textContent = `t=${s + c.k}`;
        if (c.frame) {
          const now = s + c.k === t;
          c.frame.setAttribute("stroke", now ? MARK : "#bbbbbb");
          c.frame.setAttribute("stroke-width", now ? 3 : 1);
          c.el.classList.toggle("fbx-now", now);
          if (now) scrollTo(c.el);
        }
      }
      for (const target of unrolled.targets) {
        styleTarget(target, s + target.k);
        // "loop / t=-1 / zeros": past the first step the box holds the carried value. The
        // name may take several lines, so the step's line is found from the end.
        const at = target.kind === "initial" ? target.orig.findLastIndex((x) => /^t=-\d+$/.test(x)) : -1;
        if (at >= 0) {
          target.texts[at].textContent = `t=${s + parseInt(target.orig[at].slice(2), 10)}`;
          if (at + 1 < target.texts.length) {
            target.texts[at + 1].textContent = s > 0 ? "carried" : target.orig[at + 1];
          }
        }
      }
    } else {
      for (const target of cyclic) styleTarget(target, t);
    }
  }

  function scrollTo(target) {  // the current step of a wide unrolled window into view
    const box = graphBox.getBoundingClientRect(), r = target.getBoundingClientRect();
    if (r.left < box.left) graphBox.scrollLeft -= box.left - r.left + 8;
    else if (r.right > box.right) graphBox.scrollLeft += Math.min(r.left - box.left - 8, r.right - box.right + 8);
  }

  // Built from elements and text nodes: the node and run names are text, never markup.
  function drawReadout() {
    const d = view.data;
    readout.replaceChildren();
    if (!view.runs.length) return;
    const { t, T, U } = view;
    const off = view.epoch * T * U + t * U;
    const cols = view.runs.map((r) => r.name);
    if (d.difference) cols.push("difference");
    const shown = Math.min(U, 512);
    const epoch = view.E > 1 ? `, epoch ${d.epochs[view.epoch]}` : "";
    html("b", "", readout, String(d.node));
    readout.append(" at ");
    html("span", "fbx-readout-t", readout, `t=${t}`);
    readout.append(`, sample ${d.sample}${epoch}`);
    const rows = cols.map((_, c) => {  // one run per column: its values over the units
      if (c < view.runs.length) return Array.from({ length: shown }, (_, u) => view.runs[c].values[off + u]);
      return Array.from({ length: shown }, (_, u) => view.runs[0].values[off + u] - view.runs[1].values[off + u]);
    });
    const wide = U > WIDE;
    const scroll = html("div", `fbx-readout-table${wide ? " fbx-wide" : ""}`, readout);
    const table = html("table", "", scroll);
    const head = html("tr", "", table);
    if (wide) {  // units as columns, one row per run
      html("th", "", head, "unit");
      for (let u = 0; u < shown; u++) html("th", "", head, String(u));
      cols.forEach((c, k) => {
        const row = html("tr", "", table);
        html("th", "", row, String(c));
        for (const v of rows[k]) html("td", "", row, fmt(v));
      });
    } else {
      for (const c of ["unit", ...cols]) html("th", "", head, String(c));
      for (let u = 0; u < shown; u++) {
        const row = html("tr", "", table);
        html("td", "", row, String(u));
        for (const r of rows) html("td", "", row, fmt(r[u]));
      }
    }
    if (U > shown) html("p", "", readout, `... ${U - shown} more units`);
  }

  function step() {
    const started = performance.now();
    view.t = clampT(model.get("t"));
    el.dataset.t = view.t;
    if (tInput) { tInput.value = view.t; tLabel.textContent = `t=${view.t}`; }
    paint();
    if (panel) panel.step(view.t);
    drawReadout();
    el.dataset.renderMs = (performance.now() - started).toFixed(2);
  }

  function epoch() {
    view.epoch = clampE(model.get("epoch"));
    el.dataset.epoch = view.epoch;
    if (eInput) { eInput.value = view.epoch; eLabel.textContent = `epoch ${view.data.epochs[view.epoch]}`; }
    if (panel) panel.epoch(view.epoch);
    step();
  }

  toggle.onchange = () => { model.set("unrolled", toggle.checked); model.save_changes(); };

  function all() {
    loadData();
    drawGraph();
    epoch();
    if (follow) {
      follow = false;
      model.set("epoch", view.E - 1);
      model.save_changes();
    }
  }
  const handlers = [
    ["change:t", step],
    ["change:epoch", epoch],
    ["change:data change:node_index change:sample_index", all],
    ["change:panel", () => { openPanel(); step(); }],
    ["change:graph change:unrolled change:unrolled_graph", drawGraph],
  ];
  for (const [event, f] of handlers) model.on(event, f);
  all();
  return () => {
    if (playing) clearInterval(playing);
    for (const [event, f] of handlers) model.off(event, f);
  };
}

export default { render };
