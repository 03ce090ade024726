"""Drawing a feedback model: its cyclic step graph, and its expansion over time.

`draw(model)` draws one node per layer or op of the step graph, with every
delayed edge as a dashed back-edge labelled `t-k`, and each Keras cell used in
the loop with a self-loop labelled with its state names. `draw(model, unroll=N)`
repeats the step once per timestep, in clusters `t=0 .. N-1`, with the delayed
edges running across them and the initial values as their own nodes before
`t=0`. Both return a `graphviz.Digraph` whose DOT source depends only on the
model, so equal models give equal text. A drawing too large for `dot`'s
layout to be quick gets positions of our own (`_strip.py`).

Names are text: a node's DOT id is its name with every character other than
letters, digits and `_ . - /` written `~XX` (`fbexplorer.escaping.dot_id`), and
a name reaches DOT otherwise only in an escaped label or tooltip, never as an
attribute, an HTML-like label or a link.
"""

from __future__ import annotations

import dataclasses

import graphviz

from fbexplorer import _keras
from fbexplorer._strip import Strip, cyclic_work, dot_work, label_size, rank_and_order
from fbexplorer.escaping import carrier_id, dot_id, dot_text, dot_tooltip

__all__ = ["FeedbackDiagram", "GraphvizNotFoundError", "draw"]

# A restrained palette: neutral boxes, one accent colour for everything that
# crosses time, and one colour for what the caller asked to emphasise.
_FONT = "Helvetica"
_LINE = "#555555"
_ACCENT = "#d95f02"
_HIGHLIGHT = "#c2185b"
_HIGHLIGHT_FILL = "#fde2ef"
_FILL = {
    "op": "#ffffff",
    "input": "#dbe9f6",
    "constant": "#fdf1c7",
    "delay": "#fbe3d2",
    "initial": "#f3f3f3",
    "step": "#ffffff",
}
_OUTPUT_FILL = "#dcefd9"
_RANKDIRS = ("LR", "RL", "TB", "BT")

_INSTALL_HINT = (
    "Rendering a drawing needs Graphviz's `dot` program, which is not on PATH. "
    "Install it with `apt-get install graphviz` (Debian, Ubuntu), "
    "`brew install graphviz` (macOS) or `conda install graphviz`. Without it, "
    "`.source` still gives the DOT text, and Jupyter shows the drawing through "
    "graphviz-anywidget, which renders in the browser."
)


class GraphvizNotFoundError(graphviz.ExecutableNotFound):
    """The `dot` program is missing; the message says how to install it.

    A subclass of `graphviz.ExecutableNotFound`, so code that catches that
    error keeps working.
    """

    def __init__(self):
        RuntimeError.__init__(self, _INSTALL_HINT)


class FeedbackDiagram(graphviz.Digraph):
    """A `graphviz.Digraph` that still displays in Jupyter without `dot`.

    Everything of `graphviz.Digraph` works as usual (`.source`, `.render()`,
    `.pipe()`, `.save()`). Where the `dot` program is missing, Jupyter shows
    the graph through graphviz-anywidget (rendered in the browser), and
    `.render()` / `.pipe()` raise `GraphvizNotFoundError`, which says how to
    install Graphviz.
    """

    def pipe(self, *args, **kwargs):
        try:
            return super().pipe(*args, **kwargs)
        except GraphvizNotFoundError:
            raise
        except graphviz.ExecutableNotFound as err:
            raise GraphvizNotFoundError() from err

    def render(self, *args, **kwargs):
        try:
            return super().render(*args, **kwargs)
        except GraphvizNotFoundError:
            raise
        except graphviz.ExecutableNotFound as err:
            raise GraphvizNotFoundError() from err

    def unflatten(self, *args, **kwargs):
        try:
            return super().unflatten(*args, **kwargs)
        except graphviz.ExecutableNotFound as err:
            raise GraphvizNotFoundError() from err

    def to_widget(self):
        """The drawing as a graphviz-anywidget widget (rendered in the browser).

        Returns:
            A `graphviz_anywidget.GraphvizAnyWidget` showing this DOT source.
        """
        from graphviz_anywidget import graphviz_widget_simple

        return graphviz_widget_simple(self.source)

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        try:
            return super()._repr_mimebundle_(include, exclude, **kwargs)
        except graphviz.ExecutableNotFound:
            return self.to_widget()._repr_mimebundle_(include=include, exclude=exclude)


# --------------------------------------------------------------------- analysis
@dataclasses.dataclass
class _Node:
    name: str  # the layer's name: unique in the step model
    role: str  # "input", "constant", "op" or "delay" (a placeholder that is itself an output)
    kind: str  # the class shown in the label
    shapes: list
    outputs: list  # output names this node produces (empty: not an output)


@dataclasses.dataclass
class _Picture:
    """The step graph reduced to what is drawn."""

    name: str
    nodes: list  # _Node, in the step model's topological order
    forward: list  # (tail, head) node names
    delayed: list  # (source node, head node, spec index)
    specs: list  # FeedbackSpec, in loop order
    rankdir: str = "LR"


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")" if len(shape) != 1 else f"({shape[0]},)"


def _model_nodes(model):
    """(op, node) for every call of an operation inside `model`, in the model's order.

    A layer also used outside the step model has more calls; only those that
    the step model's outputs and inputs reach are its own.
    """
    reached, stack = set(), [_keras.producer(t) for t in list(model.outputs) + list(model.inputs)]
    while stack:
        node = stack.pop()
        if id(node) in reached:
            continue
        reached.add(id(node))
        stack.extend(_keras.producer(t) for t in node.input_tensors)
    for op in model.operations:
        for node in _keras.inbound_nodes(op):
            if id(node) in reached:
                yield op, node


def _analyse(model) -> _Picture:
    graph = model.graph
    step = model.step_model
    n_in, n_const = len(graph.input_names), len(graph.constant_names)
    n_out = graph.n_outputs

    def op_of(tensor):
        return _keras.operation_of(tensor)

    placeholders = {id(op_of(t)): i for i, t in enumerate(step.inputs[n_in + n_const :])}
    inputs = {id(op_of(t)) for t in step.inputs[:n_in]}
    constants = {id(op_of(t)) for t in step.inputs[n_in : n_in + n_const]}
    outputs = {}
    for key, tensor in zip(graph.output_names, step.outputs[:n_out]):
        outputs.setdefault(id(op_of(tensor)), []).append(key)
    sources = [op_of(t) for t in step.outputs[n_out:]]
    # A placeholder that is itself an output or a source (`fbx.delayed` of a
    # delayed value) has no op to point at, so it gets a node of its own.
    shown = {id(op_of(t)) for t in step.outputs} & set(placeholders)
    cells = {s.cell for s in graph.specs if s.kind == "cell"}

    nodes, forward, delayed = [], [], []
    seen_nodes, seen_edges = set(), set()

    def add_edge(target, edge):
        if edge not in seen_edges:
            seen_edges.add(edge)
            target.append(edge)

    for op, node in _model_nodes(step):
        if id(op) in placeholders and id(op) not in shown:
            continue
        if op.name not in seen_nodes:
            seen_nodes.add(op.name)
            shapes = [tuple(t.shape) for t in node.output_tensors]
            if id(op) in inputs:
                role, kind = "input", "Input"
            elif id(op) in constants:
                role, kind = "constant", "Constant"
            elif id(op) in placeholders:
                spec = graph.specs[placeholders[id(op)]]
                role, kind = "delay", f"delay t-{spec.delay}"
            else:
                role, kind = "op", type(op).__name__
            if op.name in cells:
                shapes = shapes[:1]  # the states are shown by the self-loop
            nodes.append(_Node(op.name, role, kind, shapes, outputs.get(id(op), [])))
        if id(op) in placeholders:  # a shown placeholder: its value arrives delayed
            i = placeholders[id(op)]
            add_edge(delayed, (sources[i].name, op.name, i))
            continue
        for tensor in node.input_tensors:
            producer = op_of(tensor)
            if id(producer) in placeholders and id(producer) not in shown:
                i = placeholders[id(producer)]
                add_edge(delayed, (sources[i].name, op.name, i))
            else:
                add_edge(forward, (producer.name, op.name))
    return _Picture(model.name, nodes, forward, delayed, list(graph.specs))


# ------------------------------------------------------------------- options
def _parse_highlight(highlight, picture: _Picture, unroll) -> tuple[set, set]:
    """(names, timesteps) to emphasise; checks both against the model."""
    if highlight is None:
        return set(), set()
    items = list(highlight) if isinstance(highlight, (list, tuple, set)) else [highlight]
    names, times = set(), set()
    known = [n.name for n in picture.nodes] + [s.name for s in picture.specs]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ValueError(
                "fbx.draw: `highlight` takes a node name, a timestep, or a tuple of "
                f"them, such as ('d1', 3). Received: highlight={highlight!r}"
            )
        if isinstance(item, str):
            if item not in known:
                raise ValueError(
                    f"fbx.draw: highlight names '{item}', which is neither a node nor a "
                    f"delayed edge of '{picture.name}'. Known names: {sorted(known)}"
                )
            names.add(item)
        else:
            if unroll is not None and not 0 <= item < unroll:
                raise ValueError(
                    f"fbx.draw: highlight timestep {item} is outside the drawn steps "
                    f"0 .. {unroll - 1}. Pass a timestep in that range or a larger `unroll`."
                )
            times.add(item)
    return names, times


# ------------------------------------------------------------------- drawing
# Names are text: a node's id is `dot_id` of its name (plain characters only: no port
# ":", no step "@", no quote or "<...>"), and a name reaches DOT only inside a label or
# tooltip, escaped (fbexplorer/escaping.py).
def _node_attrs(node: _Node, show_shapes: bool, emphasise: bool) -> dict:
    lines = [node.name, node.kind]
    if show_shapes and node.shapes:
        shapes = [_shape_text(s) for s in node.shapes]
        if len(set(shapes)) == 1 and len(shapes) > 1:
            lines.append(f"{len(shapes)} x {shapes[0]}")
        else:
            lines.append(", ".join(shapes))
    for key in node.outputs:
        lines.append("output" if key == node.name else f"output '{key}'")
    fill = _OUTPUT_FILL if node.outputs and node.role == "op" else _FILL[node.role]
    # The tooltip names the box: without one, a browser shows the SVG's <title>, its DOT id.
    attrs = {"label": dot_text(*lines), "tooltip": dot_tooltip(node.name), "fillcolor": fill}
    if node.outputs:
        attrs["peripheries"] = "2"
    if node.role == "delay":
        attrs.update(style="rounded,filled,dashed", color=_ACCENT)
    if emphasise:
        attrs.update(penwidth="3", color=_HIGHLIGHT, fillcolor=_HIGHLIGHT_FILL)
    return attrs


def _delayed_attrs(label, names, emphasise: bool) -> dict:
    """Style of a delayed edge; `label` is a line or a list of lines."""
    label = label if isinstance(label, list) else [label]
    attrs = {
        "style": "dashed",
        "color": _ACCENT,
        "fontcolor": _ACCENT,
        "label": dot_text(*label),
        "tooltip": dot_tooltip(*names),
    }
    if not label:
        del attrs["label"]
    if emphasise:
        attrs.update(color=_HIGHLIGHT, fontcolor=_HIGHLIGHT, penwidth="3")
    return attrs


def _group_delayed(picture: _Picture) -> list:
    """The delayed edges as drawn: (source, head, spec indices, label, delay).

    A cell's states, fed from the cell back into itself, share one self-loop
    labelled with their names; every other delayed edge is labelled `t-k`.
    """
    groups = {}
    for source, head, i in picture.delayed:
        spec = picture.specs[i]
        # Edges with the same ends and delay are one arrow (names in its tooltip).
        kind = "cell" if spec.kind == "cell" and source == head else "delay"
        key = (source, head, kind, spec.delay)
        groups.setdefault(key, []).append(i)
    out = []
    for (source, head, kind, delay), indices in groups.items():
        names = [picture.specs[i].name for i in indices]
        label = ", ".join(names) if kind == "cell" else f"t-{delay}"
        out.append((source, head, indices, label, delay))
    return out


def _delayed_edge(dot, tail: str, head: str, attrs: dict, names) -> None:
    """A delayed edge, its SVG element named after the values it carries (`carrier_id`)."""
    dot.edge(tail, head, id=carrier_id(len(dot.body), names), **attrs)


def _new_diagram(picture: _Picture, rankdir: str) -> FeedbackDiagram:
    return FeedbackDiagram(
        name=dot_id(picture.name),
        graph_attr={
            "rankdir": rankdir,
            "fontname": _FONT,
            "fontsize": "11",
            "nodesep": "0.25",
            "ranksep": "0.35",
        },
        node_attr={
            "shape": "box",
            "style": "rounded,filled",
            "fillcolor": "white",
            "color": _LINE,
            "fontname": _FONT,
            "fontsize": "10",
        },
        edge_attr={"color": _LINE, "fontname": _FONT, "fontsize": "9", "arrowsize": "0.7"},
    )


def _draw_cyclic(picture, show_shapes, names) -> FeedbackDiagram:
    dot = _new_diagram(picture, picture.rankdir)
    strip = _strip(picture, None, show_shapes)
    for node in picture.nodes:
        place = strip.node(node.name, 0) if strip else {}
        dot.node(dot_id(node.name), **_node_attrs(node, show_shapes, node.name in names), **place)
    for tail, head in picture.forward:
        dot.edge(dot_id(tail), dot_id(head), **(strip.forward(tail, head, 0) if strip else {}))
    for g, (source, head, indices, label, _) in enumerate(_group_delayed(picture)):
        spec_names = [picture.specs[i].name for i in indices]
        emphasise = bool(names & set(spec_names))
        attrs = _delayed_attrs(label, spec_names, emphasise)
        route = strip.cyclic_edge(g) if strip else {}
        _delayed_edge(dot, dot_id(source), dot_id(head), {**attrs, **route}, spec_names)
    if strip:
        dot.attr(layout="nop2", splines="true")  # nodes and edges where `pos` puts them
    return dot


def _initial_text(spec) -> str:
    if isinstance(spec.initial, str):
        return spec.initial
    return type(spec.initial).__name__


def _initial_nodes(dot, picture, unroll, show_shapes, sizes=None) -> dict:
    """One node per delay slot read before it is written; {(spec, t): id}.

    `sizes`, a dict, gets each node's estimated size ({id: (width, height)}).
    """
    ids = {}
    if not picture.specs:
        return ids
    with dot.subgraph(name="cluster_initial") as sub:
        sub.attr(label="initial", style="dashed", color=_ACCENT, fontcolor=_ACCENT)
        for i, spec in enumerate(picture.specs):
            for t in range(min(spec.delay, unroll)):
                node_id = f"{dot_id(spec.name)}@init{t}"
                lines = [spec.name, f"t={t - spec.delay}", _initial_text(spec)]
                if show_shapes:
                    lines.append(_shape_text((None, *spec.shape)))
                sub.node(
                    node_id,
                    label=dot_text(*lines),
                    tooltip=dot_tooltip(spec.name),
                    shape="ellipse",
                    style="filled,dashed",
                    color=_ACCENT,
                    fillcolor=_FILL["initial"],
                )
                ids[(i, t)] = node_id
                if sizes is not None:
                    sizes[node_id] = label_size(dot_text(*lines), ellipse=True)
    return ids


def _draw_unrolled(picture, unroll, show_shapes, names, times) -> FeedbackDiagram:
    dot = _new_diagram(picture, picture.rankdir)
    sizes = {}
    initial = _initial_nodes(dot, picture, unroll, show_shapes, sizes)
    strip = _strip(picture, unroll, show_shapes, initial, sizes)
    first, last = picture.nodes[0].name, picture.nodes[-1].name
    for t in range(unroll):
        with dot.subgraph(name=f"cluster_t{t}") as sub:
            attrs = {"label": f"t={t}", "color": "#bbbbbb", "style": "rounded"}
            if t in times:
                attrs.update(
                    color=_HIGHLIGHT,
                    penwidth="3",
                    fontcolor=_HIGHLIGHT,
                    style="rounded,filled",
                    fillcolor="#fff7fb",
                )
            sub.attr(**attrs)
            for node in picture.nodes:
                emphasise = node.name in names and (not times or t in times)
                sub.node(_at(node.name, t), **_node_attrs(node, show_shapes, emphasise))
            for tail, head in picture.forward:
                route = strip.forward(tail, head, t) if strip else {}
                sub.edge(_at(tail, t), _at(head, t), **route)
    _delayed_across(dot, picture, unroll, initial, names, times, lambda n, t: _at(n, t), strip)
    if strip:
        _place(dot, picture, unroll, initial, strip)
        return dot
    # Invisible edges keep the strip in time order where no delayed edge does.
    for node_id in initial.values():
        dot.edge(node_id, _at(first, 0), style="invis")
    for t in range(1, unroll):
        dot.edge(_at(last, t - 1), _at(first, t), style="invis")
    return dot


# Above this many virtual nodes (`_strip.dot_work`, `cyclic_work`) for its
# delayed edges, dot takes seconds on a drawing (2-core AMD EPYC, graphviz
# 2.43) and its time grows with their square: the drawing gets positions of
# our own. The cyclic view's long back edges cost dot more per virtual node.
DOT_WORK_LIMIT = 1200
CYCLIC_WORK_LIMIT = 400


def _strip(picture, unroll, show_shapes, initial=None, initial_sizes=None):
    """The geometry of our own (`_strip.Strip`) of the step graph's drawing where dot
    would take long, else None; `unroll` None is the cyclic view."""
    nodes = {node.name: node for node in picture.nodes}
    delayed = [(source, head, delay, ix) for source, head, ix, _, delay in _group_delayed(picture)]
    size = lambda name: _box_size(_node_attrs(nodes[name], show_shapes, False))  # noqa: E731
    return _geometry(
        picture, unroll, list(nodes), picture.forward, delayed, size, initial or {}, initial_sizes
    )


def _geometry(picture, unroll, names, forward, delayed, size, initial, initial_sizes):
    """A `Strip` of these nodes and edges where dot would take long, else None.

    `delayed` holds (tail, head, delay, spec indices) once each, `size(name)`
    a node's (width, height, rim), `initial_sizes` those of the initial
    values by id; `unroll` None: the cyclic view.
    """
    rank, _ = rank_and_order(names, forward, sweeps=0)
    ends = [edge[:3] for edge in delayed]
    if unroll is None:
        if cyclic_work(rank, ends) <= CYCLIC_WORK_LIMIT:
            return None
    elif dot_work(rank, ends, max(rank.values()) + 1, unroll) <= DOT_WORK_LIMIT:
        return None
    drawn = {key: initial_sizes[node_id] for key, node_id in initial.items()}
    sizes = {name: size(name) for name in names}
    rims = {name: sizes[name][2] for name in names}
    sizes = {name: (w + 2 * rim, h + 2 * rim) for name, (w, h, rim) in sizes.items()}
    steps, cyclic = (1, True) if unroll is None else (unroll, False)
    return Strip(picture.rankdir, names, forward, sizes, delayed, drawn, steps, rims, cyclic)


def _box_size(attrs) -> tuple:
    """(width, height, rim): a node's box, and the room its outer borders take around it."""
    width, height = label_size(attrs["label"])
    return width, height, 4.0 * (int(attrs.get("peripheries", 1)) - 1)


def _place(dot, picture, unroll, initial, strip):
    """Every node's position and every cluster's box, from `strip`; Graphviz only draws."""
    for t in range(unroll):
        for node in picture.nodes:
            dot.node(_at(node.name, t), **strip.node(node.name, t))
        with dot.subgraph(name=f"cluster_t{t}") as sub:
            sub.attr(bb=strip.step_box(t), labeljust="l")  # the label clear of the lanes
    _place_initial(dot, initial, strip)


def _place_initial(dot, initial, strip):
    dot.attr(layout="nop2", splines="true")  # nodes and edges where `pos` puts them
    for key, node_id in initial.items():
        dot.node(node_id, **strip.initial_node(key))
    if initial:
        with dot.subgraph(name="cluster_initial") as sub:
            sub.attr(bb=strip.initial_box())


def _delayed_across(dot, picture, unroll, initial, names, times, place, strip=None):
    """Delayed edges from step t-k (or an initial value) into step t."""
    for g, (source, head, indices, label, delay) in enumerate(_group_delayed(picture)):
        spec_names = [picture.specs[i].name for i in indices]
        for t in range(unroll):
            emphasise = bool(names & set(spec_names)) and (not times or t in times)
            attrs = _delayed_attrs(label, spec_names, emphasise)
            if t >= delay:
                route = strip.delayed_edge(g, t) if strip else {}
                _delayed_edge(
                    dot, place(source, t - delay), place(head, t), {**attrs, **route}, spec_names
                )
            else:
                for i in indices:
                    name = picture.specs[i].name
                    own = _delayed_attrs(name if len(indices) > 1 else label, [name], emphasise)
                    route = strip.initial_edge(i, t, g) if strip else {}
                    _delayed_edge(dot, initial[(i, t)], place(head, t), {**own, **route}, [name])


def _draw_collapsed(picture, unroll, show_shapes, names, times) -> FeedbackDiagram:
    dot = _new_diagram(picture, picture.rankdir)
    sizes = {}
    initial = _initial_nodes(dot, picture, unroll, show_shapes, sizes)
    # Inside a box every delayed edge from t-k is one arrow, labelled with names.
    by_delay = {}
    for i, spec in enumerate(picture.specs):
        by_delay.setdefault(spec.delay, []).append(i)
    delays = sorted(by_delay.items())
    box = _box_size({"label": f"t={unroll - 1}"})
    delayed = [("step", "step", delay, indices) for delay, indices in delays]
    strip = _geometry(picture, unroll, ["step"], [], delayed, lambda _: box, initial, sizes)
    for t in range(unroll):
        attrs = {"label": f"t={t}", "fillcolor": _FILL["step"]}
        if t in times:
            attrs.update(penwidth="3", color=_HIGHLIGHT, fillcolor=_HIGHLIGHT_FILL)
        dot.node(f"step@t{t}", **attrs, **(strip.node("step", t) if strip else {}))
    for g, (delay, indices) in enumerate(delays):
        spec_names = [picture.specs[i].name for i in indices]
        for t in range(unroll):
            emphasise = bool(names & set(spec_names)) and (not times or t in times)
            if t >= delay:
                # Names on the first arrow of each delay only, so that long strips stay narrow.
                label = _wrap(spec_names) if t == delay else []
                if delay > 1:
                    label = [f"t-{delay}", *label]
                attrs = _delayed_attrs(label, spec_names, emphasise)
                route = strip.delayed_edge(g, t) if strip else {}
                _delayed_edge(
                    dot, f"step@t{t - delay}", f"step@t{t}", {**attrs, **route}, spec_names
                )
            else:
                for i in indices:
                    name = picture.specs[i].name
                    attrs = _delayed_attrs(name, [name], False)
                    route = strip.initial_edge(i, t, g) if strip else {}
                    _delayed_edge(dot, initial[(i, t)], f"step@t{t}", {**attrs, **route}, [name])
    if strip:
        _place_initial(dot, initial, strip)
        return dot
    for node_id in initial.values():
        dot.edge(node_id, "step@t0", style="invis")
    for t in range(1, unroll):
        dot.edge(f"step@t{t - 1}", f"step@t{t}", style="invis")
    return dot


def _wrap(names, per_line: int = 3) -> list:
    return [", ".join(names[i : i + per_line]) for i in range(0, len(names), per_line)]


def _at(name: str, t: int) -> str:
    return f"{dot_id(name)}@t{t}"


def _check_draw_arguments(model, unroll, rankdir, collapse):
    """`fbx.draw`'s arguments, each refused with what to pass."""
    if not (hasattr(model, "graph") and hasattr(model, "step_model")):
        raise ValueError(
            f"fbx.draw expects a FeedbackModel. Received: {type(model).__name__}. "
            f"For a plain Keras model use keras.utils.plot_model."
        )
    if unroll is not None and (isinstance(unroll, bool) or not isinstance(unroll, int)):
        raise ValueError(
            f"fbx.draw: `unroll` is None (the cyclic view) or a number of timesteps "
            f">= 1. Received: unroll={unroll!r}"
        )
    if unroll is not None and unroll < 1:
        raise ValueError(f"fbx.draw: `unroll` must be >= 1. Received: unroll={unroll}")
    if collapse and unroll is None:
        raise ValueError(
            "fbx.draw: `collapse=True` draws each timestep as one box, so it needs "
            "`unroll=N`. Pass unroll, or drop collapse."
        )
    if rankdir not in _RANKDIRS:
        raise ValueError(
            f"fbx.draw: `rankdir` must be one of {list(_RANKDIRS)}. Received: rankdir={rankdir!r}"
        )


# ---------------------------------------------------------------------- public
def draw(
    model,
    unroll: int | None = None,
    *,
    show_shapes: bool = True,
    highlight=None,
    rankdir: str = "LR",
    collapse: bool = False,
) -> FeedbackDiagram:
    """Draw a feedback model: its cyclic step graph, or its expansion over time.

    Cyclic view (`unroll=None`): one box per layer or op of the step graph,
    labelled with its name, class and per-step output shape; per-step inputs
    (blue), constants (yellow) and outputs (green, double border) stand out.
    Forward edges are solid. Every delayed edge is dashed, in one accent
    colour, drawn from its source to the layers that read it and labelled
    `t-1` ... `t-k` (hover for its name); `Feedback` placeholders are these
    edges, not boxes. A Keras cell in the loop (`fbx.cell`, or a nested
    `FeedbackModel`) has a self-loop labelled with its state names.

    Unrolled view (`unroll=N`): one cluster per timestep `t=0 .. N-1`, every
    node repeated, forward edges inside a step, delayed edges from step
    `t-k` into step `t`, and each initial value as its own node (cluster
    "initial") where a step reads it: an edge of delay k is read from initial
    values at `t = 0 .. k-1`. With `collapse=True` each step is one box and
    the delayed edges between boxes are labelled with their names, so that
    N up to about 50 stays readable.

    Graphviz's `dot` lays out a drawing in a time that grows with the square
    of the ranks its delayed edges cross: minutes for tens of long feedback
    edges. Above a size (`DOT_WORK_LIMIT`, `CYCLIC_WORK_LIMIT`) a drawing is
    placed by fbexplorer instead (`layout=nop2` in its source): nodes on a
    grid of ranks and rows, every step a copy of the first, forward edges
    across the gaps between ranks, longer ones in lanes below the step,
    delayed edges in lanes above; its time grows linearly with nodes, edges
    and steps.

    Args:
        model: a `FeedbackModel`.
        unroll: `None` for the cyclic view, or the number of timesteps to draw.
        show_shapes: show output shapes (and initial values' shapes).
        highlight: what to emphasise: a node name (a layer, or a delayed
            edge's name such as `"loop"` or `"lstm/h"`), a timestep (an int,
            unrolled views only: the cyclic view has no time), or a tuple of
            them, such as `("d1", 3)` for node `d1` at step 3.
        rankdir: the direction of the drawing: `"LR"`, `"TB"`, `"RL"` or `"BT"`.
        collapse: with `unroll`, draw each timestep as one box.

    Returns:
        A `FeedbackDiagram` (a `graphviz.Digraph`): Jupyter displays it,
        `.source` is its DOT text, `.render()` and `.pipe()` render it (they
        need Graphviz's `dot` program; Jupyter does not).

    Example:
        >>> x = keras.Input((1,), name="x")
        >>> loop = fbx.Feedback((4,), name="loop")
        >>> h = keras.layers.Dense(4, name="d1")(keras.layers.Concatenate()([x, loop]))
        >>> net = fbx.FeedbackModel(x, h, feedback={"loop": h})
        >>> print(fbx.draw(net).source)        # doctest: +SKIP
        >>> fbx.draw(net, unroll=3, highlight=("d1", 2))  # doctest: +SKIP
    """
    _check_draw_arguments(model, unroll, rankdir, collapse)
    picture = _analyse(model)
    picture = dataclasses.replace(picture, rankdir=rankdir)
    names, times = _parse_highlight(highlight, picture, unroll)
    if unroll is None:
        return _draw_cyclic(picture, show_shapes, names)
    if collapse:
        return _draw_collapsed(picture, unroll, show_shapes, names, times)
    return _draw_unrolled(picture, unroll, show_shapes, names, times)
