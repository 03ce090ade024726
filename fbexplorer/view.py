"""The explorer's browser side: an anywidget that plays a trace without the kernel.

`ExplorerView` holds, for one node and one sample, every frame of the trace
(and of every epoch a `TraceCallback` recorded) as base64 float32 arrays, and
draws in the browser with its own small ES module (`explorer.js`, beside this
file): the graph's SVG with each node's box filled by its value at step t and
each delayed edge as wide as the value it carries, a colour legend, the
trajectories, a units x time heatmap and the state's phase portrait as
tabs, an unrolled window of steps around t, and a table of the values at t.
Its `t` and `epoch` traits are linked in the browser to the explorer's
sliders (`jslink`), so Play and scrubbing redraw with no round trip to
the kernel. `standalone_html` writes the same view into one HTML file that
runs with no kernel and no network.

The data format (the `data` trait) is documented in `explorer.js`; a panel
is one entry of its `PANELS` table, fed from `data["panels"][name]`.
"""

from __future__ import annotations

import base64
import pathlib
import re
import xml.etree.ElementTree as ET

import anywidget
import numpy as np
import traitlets

from fbexplorer.escaping import carried_names, dot_id, html_text, json_for_html

__all__ = [
    "ExplorerView",
    "decode",
    "encode",
    "graph_targets",
    "standalone_html",
    "unrolled_targets",
]

_HERE = pathlib.Path(__file__).resolve().parent
_SVG = "{http://www.w3.org/2000/svg}"


class ExplorerView(anywidget.AnyWidget):
    """The part of the explorer that draws and animates in the browser.

    Traits (all synced): `t` (the step shown), `epoch` (an index into
    `data["epochs"]`), `panel` (the open tab), `unrolled` (the unrolled
    window shown instead of the cyclic graph), `controls` (draw its own Play
    button and sliders: on in a standalone page, off in a notebook where
    ipywidgets' Play and sliders are linked to `t` and `epoch`), `graph` and
    `unrolled_graph` (SVG drawings and which of their elements show which
    node), `data` (the frames; see `explorer.js`), `selected` (the node
    last clicked in the graph: the explorer's node picker follows it), `pages`
    (every node and sample shown so far, in parts, as
    `explorer_data.offline_pages` makes them, with `options`: the pickers'
    nodes and samples in their order) and `node_index`, `sample_index` (the
    pickers' choice): in a notebook exported with its widget state, the
    pickers switch between the pages explored.
    """

    _esm = _HERE / "explorer.js"
    _css = _HERE / "explorer.css"
    t = traitlets.Int(0).tag(sync=True)
    epoch = traitlets.Int(0).tag(sync=True)
    panel = traitlets.Unicode("trajectories").tag(sync=True)
    unrolled = traitlets.Bool(False).tag(sync=True)
    controls = traitlets.Bool(False).tag(sync=True)
    graph = traitlets.Dict().tag(sync=True)
    unrolled_graph = traitlets.Dict().tag(sync=True)
    data = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)  # the node last clicked in the graph
    # The pages explored, kept for a page with no kernel (see explorer.js), and the
    # pickers' choice, linked in the browser to the node and sample Dropdowns' index.
    pages = traitlets.Dict().tag(sync=True)
    node_index = traitlets.Int(0).tag(sync=True)
    sample_index = traitlets.Int(0).tag(sync=True)


def encode(array) -> str:
    """An array as base64 of its float32 bytes (C order), as `explorer.js` reads it."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def decode(text: str, shape) -> np.ndarray:
    """The inverse of `encode`."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape)


# ----------------------------------------------------------------- SVG targets
def _svg_root(svg: str):
    return ET.fromstring(re.sub(r"^.*?(<svg)", r"\1", svg, flags=re.S))


def _groups(svg: str, names):
    """(kind, element id, title, carried) of every node, edge and cluster group.

    `carried` lists those of `names` a delayed edge carries, read from its id (drawing.py
    names it with `carrier_id`), and is empty for anything else. Titles are node ids
    (`dot_id` of a name), never a name itself.
    """
    for group in _svg_root(svg).iter(f"{_SVG}g"):
        kind = group.get("class")
        if kind not in ("node", "edge", "cluster"):
            continue
        title = group.find(f"{_SVG}title")
        carried = carried_names(group.get("id"), names) if kind == "edge" else None
        yield kind, group.get("id"), title.text or "", carried or []


def _base(name: str) -> str:
    """The drawn node of a trace name: `d1#1` and `d1[0]` are drawn as `d1`."""
    return re.sub(r"(#\d+)?(\[\d+\])?$", "", name)


def _drawn(name: str) -> str:
    return dot_id(name)  # drawing.py's node ids


def graph_targets(svg: str, names) -> dict:
    """{trace node: {"kind": "node" | "edge", "ids": [...]}} for the cyclic drawing.

    A layer's box shows the layer (a second call `d1#1` or a part `d1[0]`
    only where the layer itself is not traced); a delayed value or cell
    state shows on the delayed edges that carry it (their tooltips name it).
    """
    names = list(names)
    boxes, edges = {}, {}
    for kind, gid, title, carried in _groups(svg, {*names, *map(_base, names)}):
        if kind == "node":
            boxes[title] = gid
        for name in carried:
            edges.setdefault(name, []).append(gid)
    out, used = {}, set()
    for exact in (True, False):
        for name in names:
            if name in out:
                continue
            key = _drawn(name if exact else _base(name))
            if key in boxes and boxes[key] not in used:
                out[name] = {"kind": "node", "ids": [boxes[key]]}
                used.add(boxes[key])
            elif (name if exact else _base(name)) in edges:
                ids = [i for i in edges[name if exact else _base(name)] if i not in used]
                if ids:
                    out[name] = {"kind": "edge", "ids": ids}
                    used.update(ids)
    return out


def unrolled_targets(svg: str, names, window: int) -> dict:
    """Where the unrolled drawing of `window` steps shows each node, step by step.

    Returns `{"window", "clusters": [[k, id]], "targets": [[name, k, kind, id]]}`:
    step k of the window shows `name` in the element `id`. An initial value
    (`loop@init0`) shows the delayed value read at window step k; a delayed
    edge into step k shows the value it carries there.
    """
    names = list(names)
    boxes, edges, clusters = {}, [], []
    for kind, gid, title, carried in _groups(svg, names):
        if kind == "cluster":
            m = re.fullmatch(r"cluster_t(\d+)", title)
            if m:
                clusters.append([int(m.group(1)), gid])
        elif kind == "node":
            m = re.fullmatch(r"(.*)@(t|init)(\d+)", title)
            if m:
                boxes[gid] = (m.group(1), m.group(2), int(m.group(3)))
        elif carried:
            m = re.search(r"@(?:t|init)(\d+)$", title)
            if m:
                edges.append((gid, carried, int(m.group(1))))
    targets = []
    wanted = {_drawn(n): n for n in reversed(list(names))}  # first trace name wins
    for gid, (drawn, where, k) in boxes.items():
        name = wanted.get(drawn)
        if name is None and drawn in {_drawn(_base(n)) for n in names}:
            name = next(n for n in names if _drawn(_base(n)) == drawn)
        if name is not None:
            kind = "initial" if where == "init" else "node"
            targets.append([name, k, kind, gid])
    for gid, carried, k in edges:
        for name in carried:
            if name in names:
                targets.append([name, k, "edge", gid])
                break
    return {"window": window, "clusters": sorted(clusters), "targets": targets}


# ------------------------------------------------------------------ standalone
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: sans-serif; margin: 16px; }}
.fbx-pickers label {{ margin-right: 16px; }} .fbx-pick-note {{ color: #666; font-size: 90%; }}</style>
<style>{css}</style></head>
<body><div id="fbx-pickers" class="fbx-pickers"></div><div id="fbx-root"></div>
<script id="fbx-state" type="application/json">{state}</script>
<script id="fbx-esm" type="text/plain">{esm}</script>
<script type="module">
// A stand-in for the widget model: the traits, saved in the page.
const state = JSON.parse(document.getElementById("fbx-state").textContent);
const handlers = {{}};
const model = {{
  get: (k) => state[k],
  set: (k, v) => {{ state[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); }},
  save_changes: () => {{}},
  on: (events, f) => {{ events.split(" ").forEach((e) => (handlers[e] = handlers[e] || []).push(f)); }},
  off: () => {{}},
  send: () => {{}},
}};
// Node and sample pickers over the pages kept (state.pages): each choice composes the
// page from its parts and redraws, as a change of the widget's data does. Names are text.
const pages = state.pages;
const fire = (k) => (handlers["change:" + k] || []).forEach((f) => f());
if (pages) {{
  const bar = document.getElementById("fbx-pickers");
  let node = pages.node, sample = String(pages.sample);
  const show = () => {{
    if (pages.graphs[node]) state.graph = pages.graphs[node];
    state.data = Object.assign({{}}, pages.common, pages.by_sample[sample], pages.by_node[node][sample]);
    fire("data");
  }};
  const pick = (name, options, value, label, set) => {{
    const box = document.createElement("label");
    box.append(name + " ");
    const select = document.createElement("select");
    select.className = "fbx-pick-" + name;
    for (const o of options) {{
      const option = document.createElement("option");
      option.value = String(o);
      option.textContent = label(o);
      select.appendChild(option);
    }}
    select.value = String(value);
    select.onchange = () => {{ set(select.value); show(); }};
    box.appendChild(select);
    bar.appendChild(box);
  }};
  pick("node", pages.nodes, node, (n) => n, (v) => (node = v));
  pick("sample", pages.samples, sample, (s) => `sample ${{s}}`, (v) => (sample = v));
  if (pages.note) bar.appendChild(Object.assign(document.createElement("span"), {{ className: "fbx-pick-note", textContent: pages.note }}));
}}
const source = document.getElementById("fbx-esm").textContent;
const url = URL.createObjectURL(new Blob([source], {{ type: "text/javascript" }}));
const mod = (await import(url)).default;
mod.render({{ model, el: document.getElementById("fbx-root") }});
</script></body></html>
"""


def standalone_html(
    view: ExplorerView, title: str = "fbexplorer", t: int | None = None, pages: dict | None = None
) -> str:
    """One HTML page that shows `view` with its own controls, offline, with no kernel.

    `t` is the step it opens on (default: the view's). `pages` (the `state` of
    `fbexplorer.explorer_data.offline_pages`, with an optional `note` shown
    beside them) adds node and sample pickers that switch between the pages
    it holds.
    """
    state = {
        name: getattr(view, name)
        for name in ("t", "epoch", "panel", "unrolled", "graph", "unrolled_graph", "data")
    }
    state["controls"] = True
    if pages is not None:
        state["pages"] = pages
    if t is not None:
        state["t"] = int(t)
    text = json_for_html(state)  # names are in it: no `<`, `>` or `&` left to read as markup
    esm = re.sub(r"<(/script|!--)", r"<\\\1", (_HERE / "explorer.js").read_text(), flags=re.I)
    css = (_HERE / "explorer.css").read_text()
    return _PAGE.format(title=html_text(title), css=css, state=text, esm=esm)
