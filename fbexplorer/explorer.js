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
//                 for every epoch); fixed points, if any, drawn at fixed_epoch.
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

function fmt(v) {
  return Number.isFinite(v) ? Number(v.toPrecision(6)).toString() : "";
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

// The `points` of polylines through point(0 .. n-1) ([x, y] in pixels): a NaN
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

const PANELS = {
  trajectories: {
    label: "trajectories",
    available: () => true,
    build(box, view) {
      const { T, U, runs } = view;
      const W = 680, H = 250, L = 48, R = 12, TOP = 10, B = 26;
      const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "fbx-lines", width: W, height: H }, box);
      const [lo, hi] = extent(runs.map((r) => r.values));
      const x = (t) => L + (T > 1 ? (t / (T - 1)) * (W - L - R) : (W - L - R) / 2);
      const y = (v) => TOP + (1 - (v - lo) / (hi - lo)) * (H - TOP - B);
      svg("rect", { x: L, y: TOP, width: W - L - R, height: H - TOP - B, fill: "none", stroke: "#ccc" }, root);
      for (const v of [lo, (lo + hi) / 2, hi]) {
        svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "fbx-tick" }, root).textContent = fmt(v).slice(0, 7);
      }
      for (const t of [0, Math.floor((T - 1) / 2), T - 1]) {
        svg("text", { x: x(t), y: H - 8, "text-anchor": "middle", class: "fbx-tick" }, root).textContent = t;
      }
      if (lo < 0 && hi > 0) svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: "#e5e5e5" }, root);
      for (const b of view.data.boundaries || []) {
        svg("line", { x1: x(b - 0.5), x2: x(b - 0.5), y1: TOP, y2: H - B, stroke: "#888", "stroke-dasharray": "2,3", class: "fbx-boundary" }, root);
      }
      const lines = svg("g", {}, root);
      const marker = svg("line", { y1: TOP, y2: H - B, stroke: MARK, "stroke-width": 2, class: "fbx-marker" }, root);
      return {
        epoch(e) {
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
      html("div", "fbx-heat-label", wrap, `units (rows) x t (columns), ${run.name}`);
      const area = html("div", "fbx-heat-area", wrap);
      const canvas = html("canvas", "", area);
      canvas.width = T; canvas.height = U;
      canvas.style.height = `${Math.max(60, Math.min(260, U * 10))}px`;
      const marker = html("div", "fbx-heat-marker fbx-marker", area);
      const [lo, hi] = extent([run.values]);
      const m = Math.max(Math.abs(lo), Math.abs(hi));
      html("div", "fbx-heat-label", wrap, `colour: -${fmt(m)} (blue) to ${fmt(m)} (red)`);
      const ctx = canvas.getContext("2d");
      return {
        epoch(e) {
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
    build(box, view) {
      const p = view.data.panels.portrait;
      const { T } = view;
      const coords = floats(p.coords);  // (E, T, 2)
      const fixed = p.fixed ? floats(p.fixed) : new Float32Array(0);  // (P, 2)
      const W = 420, H = 320, L = 48, R = 12, TOP = 10, B = 34;
      const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "fbx-portrait", width: W, height: H }, box);
      const even = (a, k) => a.filter((_, i) => i % 2 === k);
      const pad = ([lo, hi]) => [lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)];
      const [x0, x1] = pad(extent([even(coords, 0), even(fixed, 0)]));
      const [y0, y1] = pad(extent([even(coords, 1), even(fixed, 1)]));
      const x = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
      const y = (v) => TOP + (1 - (v - y0) / (y1 - y0)) * (H - TOP - B);
      svg("rect", { x: L, y: TOP, width: W - L - R, height: H - TOP - B, fill: "none", stroke: "#ccc" }, root);
      const pc = (k) => `PC${k + 1} (${(100 * p.variance[k]).toFixed(1)}%)`;
      svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", class: "fbx-tick" }, root).textContent = pc(0);
      svg("text", { x: 12, y: (TOP + H - B) / 2, "text-anchor": "middle", class: "fbx-tick",
        transform: `rotate(-90 12 ${(TOP + H - B) / 2})` }, root).textContent = pc(1);
      const line = svg("g", { class: "fbx-path" }, root);  // polylines: gaps where not finite
      const start = svg("rect", { width: 6, height: 6, fill: PALETTE[0], class: "fbx-start" }, root);
      const points = svg("g", { class: "fbx-fixed" }, root);
      for (let i = 0; i < p.stable?.length; i++) {
        const stable = p.stable[i];
        svg("circle", {
          cx: x(fixed[2 * i]), cy: y(fixed[2 * i + 1]), r: 5, "stroke-width": 1.5,
          stroke: PALETTE[3], fill: stable ? PALETTE[3] : "#fff", "data-stable": stable,
        }, points);
      }
      const marker = svg("circle", { r: 6, fill: MARK, stroke: "#333", "stroke-width": 1.5, class: "fbx-marker" }, root);
      let at = (t) => [coords[2 * t], coords[2 * t + 1]];
      html("div", "fbx-portrait-label", box,
        `state ${p.nodes.join(", ")} on its principal components; start: square, t: orange dot` +
        (p.stable ? "; fixed points: stable filled, unstable hollow" : ""));
      return {
        epoch(e) {
          const off = e * T * 2;
          at = (t) => [coords[off + 2 * t], coords[off + 2 * t + 1]];
          line.replaceChildren();
          for (const points of segments(T, (t) => { const [u, v] = at(t); return [x(u), y(v)]; })) {
            svg("polyline", { points, fill: "none", stroke: PALETTE[0], "stroke-width": 1.3 }, line);
          }
          line.dataset.epoch = e;
          const [u, v] = at(0);
          start.style.display = Number.isFinite(u + v) ? "" : "none";
          start.setAttribute("x", x(u) - 3);
          start.setAttribute("y", y(v) - 3);
          points.style.display = p.fixed_epoch === undefined || p.fixed_epoch === e ? "" : "none";
        },
        step(t) {
          const [u, v] = at(t);
          marker.style.display = Number.isFinite(u + v) ? "" : "none";
          marker.setAttribute("cx", x(u));
          marker.setAttribute("cy", y(v));
          marker.dataset.t = t;
        },
      };
    },
  },
};

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

  const view = { data: null, runs: [], T: 1, U: 1, E: 1, t: 0, epoch: 0 };
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
        unrolled.targets.push({ i, k, kind, el, shapes: shapesOf(el), texts, orig: texts.map((x) => x.textContent) });
      }
    } else {
      for (const [name, target] of Object.entries(g.targets || {})) {
        const i = names.indexOf(name);
        if (i < 0) continue;
        for (const id of target.ids) {
          const el = find(id);
          if (el) cyclic.push({ i, kind: target.kind, el, shapes: shapesOf(el) });
        }
      }
    }
    paint();
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

  // Built from elements and text nodes: the node and run names are text, never markup.
  function drawReadout() {
    const d = view.data;
    readout.replaceChildren();
    if (!view.runs.length) return;
    const { t, T, U } = view;
    const off = view.epoch * T * U + t * U;
    const cols = view.runs.map((r) => r.name);
    if (d.difference) cols.push("difference");
    const shown = Math.min(U, 32);
    const epoch = view.E > 1 ? `, epoch ${d.epochs[view.epoch]}` : "";
    html("b", "", readout, String(d.node));
    readout.append(" at ");
    html("span", "fbx-readout-t", readout, `t=${t}`);
    readout.append(`, sample ${d.sample}${epoch}`);
    const table = html("table", "", readout);
    const head = html("tr", "", table);
    for (const c of ["unit", ...cols]) html("th", "", head, String(c));
    for (let u = 0; u < shown; u++) {
      const vals = view.runs.map((r) => r.values[off + u]);
      if (d.difference) vals.push(vals[0] - vals[1]);
      const row = html("tr", "", table);
      html("td", "", row, String(u));
      for (const v of vals) html("td", "", row, fmt(v));
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
