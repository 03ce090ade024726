"""Drawing: the cyclic step graph and its unrolled expansion, in DOT and SVG.

Expected counts are worked out by hand from each small model below.
"""

import re
import xml.etree.ElementTree as ET

import graphviz
import keras
import numpy as np
import pytest
from helpers import readme_network

import fbexplorer as fbx
from fbexplorer.drawing import FeedbackDiagram, GraphvizNotFoundError

SVG = "{http://www.w3.org/2000/svg}"
ACCENT = "#d95f02"


# ------------------------------------------------------------------ models
def seed(delay=1):
    """x -> concatenate -> d1 -> d2 -> d3 -> out, with d3 fed back into d1."""
    return readme_network(delay=delay, activation=None, name="seed")


def lstm_net():
    x = keras.Input((3,), name="x")
    h = fbx.cell(keras.layers.LSTMCell(4, name="lstm"))(keras.layers.Dense(4, name="enc")(x))
    return fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h), name="lstm_net")


def nested_net():
    xi = keras.Input((2,), name="xi")
    loop = fbx.Feedback((4,), name="loop")
    hi = keras.layers.Dense(4, name="di")(keras.layers.Concatenate(name="cat_i")([xi, loop]))
    inner = fbx.FeedbackModel(xi, hi, feedback={"loop": hi}, name="inner")
    x = keras.Input((2,), name="x")
    y = keras.layers.Dense(1, name="out")(fbx.cell(inner)(x))
    return fbx.FeedbackModel(x, y, name="outer")


def forward_delay_net():
    """d1 reaches `add` twice: directly, and one step late through fbx.delayed."""
    x = keras.Input((2,), name="x")
    h1 = keras.layers.Dense(4, name="d1")(x)
    s = keras.layers.Add(name="add")([h1, fbx.delayed(h1, delay=1, name="d1_late")])
    return fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(s), name="fwd")


def multi_io_net():
    """A per-step input, a constant, a feedback and two named outputs."""
    x = keras.Input((2,), name="x")
    img = keras.Input((3,), name="img")
    loop = fbx.Feedback((4,), name="loop")
    h = keras.layers.Dense(4, name="h")(keras.layers.Concatenate(name="cat")([x, img, loop]))
    z = keras.layers.Dense(1, name="z")(h)
    return fbx.FeedbackModel(
        x, {"state": h, "score": z}, feedback={"loop": h}, constants=img, name="multi"
    )


# ------------------------------------------------------------------ SVG reading
def svg_of(diagram):
    """Nodes, edges and clusters of the rendered SVG."""
    return parse_svg(diagram.pipe(format="svg"))


def parse_svg(data: bytes):
    root = ET.fromstring(data)
    out = {"nodes": {}, "edges": [], "clusters": {}}
    for g in root.iter(f"{SVG}g"):
        cls = g.get("class")
        title = g.findtext(f"{SVG}title")
        texts = [t.text for t in g.iter(f"{SVG}text")]
        if cls == "node":
            out["nodes"][title] = texts
        elif cls == "cluster":
            out["clusters"][title] = texts
        elif cls == "edge":
            path = next(g.iter(f"{SVG}path"))
            tail, head = title.split("->")
            out["edges"].append(
                {
                    "tail": tail,
                    "head": head,
                    "labels": texts,
                    "dashed": path.get("stroke-dasharray") is not None,
                    "color": path.get("stroke"),
                    "width": path.get("stroke-width"),
                }
            )
    return out


def step_of(node_id):
    return int(re.search(r"@t(\d+)$", node_id).group(1))


# ------------------------------------------------------------------ cyclic view
def test_seed_cyclic_nodes_edges_and_dashed_feedback():
    diagram = fbx.draw(seed())
    assert isinstance(diagram, graphviz.Digraph)
    svg = svg_of(diagram)
    # One box per layer: the Feedback placeholder is an edge, not a box.
    assert sorted(svg["nodes"]) == ["cat", "d1", "d2", "d3", "out", "x"]
    solid = sorted((e["tail"], e["head"]) for e in svg["edges"] if not e["dashed"])
    assert solid == [("cat", "d1"), ("d1", "d2"), ("d2", "d3"), ("d3", "out"), ("x", "cat")]
    dashed = [e for e in svg["edges"] if e["dashed"]]
    assert len(dashed) == 1
    assert (dashed[0]["tail"], dashed[0]["head"]) == ("d3", "cat")
    assert dashed[0]["labels"] == ["t-1"] and dashed[0]["color"] == ACCENT
    # Labels: name, class, shape; input and output marked.
    assert svg["nodes"]["d1"] == ["d1", "Dense", "(None, 8)"]
    assert svg["nodes"]["x"] == ["x", "Input", "(None, 1)"]
    assert svg["nodes"]["out"] == ["out", "Dense", "(None, 1)", "output"]
    assert re.search(r"\bout \[.*peripheries=2", diagram.source)
    assert "loop" not in svg["nodes"]


def test_show_shapes_off_and_rankdir():
    source = fbx.draw(seed(), show_shapes=False, rankdir="TB").source
    assert "(None," not in source
    assert "rankdir=TB" in source


def test_constants_and_named_outputs_are_distinct():
    diagram = fbx.draw(multi_io_net())
    svg = svg_of(diagram)
    assert svg["nodes"]["img"] == ["img", "Constant", "(None, 3)"]
    assert svg["nodes"]["x"] == ["x", "Input", "(None, 2)"]
    assert svg["nodes"]["h"][-1] == "output 'state'"
    assert svg["nodes"]["z"][-1] == "output 'score'"
    fills = dict(re.findall(r"^\t(\w+) \[.*fillcolor=\"(#\w+)\"", diagram.source, re.M))
    assert len({fills["x"], fills["img"], fills["h"], fills["cat"]}) == 4
    dashed = [(e["tail"], e["head"]) for e in svg["edges"] if e["dashed"]]
    assert dashed == [("h", "cat")]


def test_lstm_cell_is_a_self_loop_with_its_state_names():
    svg = svg_of(fbx.draw(lstm_net()))
    assert sorted(svg["nodes"]) == ["enc", "lstm", "out", "x"]  # no state boxes
    loops = [e for e in svg["edges"] if e["tail"] == e["head"]]
    assert len(loops) == 1
    assert loops[0]["tail"] == "lstm" and loops[0]["dashed"]
    assert loops[0]["labels"] == ["lstm/h, lstm/c"]
    assert svg["nodes"]["lstm"] == ["lstm", "LSTMCell", "(None, 4)"]
    assert len(svg["edges"]) == 4  # x->enc, enc->lstm, lstm->out, the self-loop


def test_nested_feedback_model_is_a_self_loop():
    svg = svg_of(fbx.draw(nested_net()))
    assert sorted(svg["nodes"]) == ["inner", "out", "x"]
    assert svg["nodes"]["inner"][:2] == ["inner", "StepCell"]
    loops = [e for e in svg["edges"] if e["tail"] == e["head"]]
    assert [(e["tail"], e["labels"], e["dashed"]) for e in loops] == [
        ("inner", ["inner/loop"], True)
    ]


def test_forward_path_delay_is_a_dashed_edge():
    svg = svg_of(fbx.draw(forward_delay_net()))
    assert "d1_late" not in svg["nodes"]
    edges = sorted((e["tail"], e["head"], e["dashed"], tuple(e["labels"])) for e in svg["edges"])
    assert edges == [
        ("add", "out", False, ()),
        ("d1", "add", False, ()),
        ("d1", "add", True, ("t-1",)),
        ("x", "d1", False, ()),
    ]


def test_explicitly_wired_cell_gets_one_self_loop():
    x = keras.Input((3,), name="x")
    h_prev, c_prev = fbx.Feedback((4,), name="h_prev"), fbx.Feedback((4,), name="c_prev")
    out, (h, c) = keras.layers.LSTMCell(4, name="lstm")(x, [h_prev, c_prev])
    net = fbx.FeedbackModel(x, out, feedback={"h_prev": h, "c_prev": c})
    diagram = fbx.draw(net)
    loops = [e for e in svg_of(diagram)["edges"] if e["tail"] == e["head"]]
    assert [(e["tail"], e["labels"], e["dashed"]) for e in loops] == [("lstm", ["t-1"], True)]
    assert 'tooltip="h_prev, c_prev"' in diagram.source


def test_delayed_value_returned_as_output_gets_its_own_node():
    x = keras.Input((2,), name="x")
    y = keras.layers.Dense(2, name="d")(x)
    net = fbx.FeedbackModel(x, [y, fbx.delayed(y, delay=2, name="late")])
    svg = svg_of(fbx.draw(net))
    assert svg["nodes"]["late"] == ["late", "delay t-2", "(None, 2)", "output"]
    dashed = [(e["tail"], e["head"], e["labels"]) for e in svg["edges"] if e["dashed"]]
    assert dashed == [("d", "late", ["t-2"])]


def test_model_without_delayed_edges_has_no_initial_values():
    c = keras.Input((2,), name="c")
    net = fbx.FeedbackModel([], keras.layers.Dense(1, name="o")(c), constants=c, steps=3)
    svg = svg_of(fbx.draw(net, unroll=2))
    assert sorted(svg["clusters"]) == ["cluster_t0", "cluster_t1"]
    assert sorted(svg["nodes"]) == ["c@t0", "c@t1", "o@t0", "o@t1"]


# ------------------------------------------------------------------ unrolled view
def test_seed_unrolled_clusters_and_edges():
    n = 4
    svg = svg_of(fbx.draw(seed(), unroll=n))
    steps = {f"cluster_t{t}": [f"t={t}"] for t in range(n)}
    assert svg["clusters"] == {**steps, "cluster_initial": ["initial"]}
    assert len(svg["nodes"]) == 6 * n + 1  # six per step, one initial value
    assert svg["nodes"]["loop@init0"][:3] == ["loop", "t=-1", "zeros"]
    solid = [e for e in svg["edges"] if not e["dashed"]]
    assert len(solid) == 5 * n and all(step_of(e["tail"]) == step_of(e["head"]) for e in solid)
    dashed = sorted((e["tail"], e["head"]) for e in svg["edges"] if e["dashed"])
    expected = [("d3@t0", "cat@t1"), ("d3@t1", "cat@t2"), ("d3@t2", "cat@t3")]
    assert dashed == sorted([("loop@init0", "cat@t0"), *expected])


def test_delay_two_spans_two_clusters():
    n = 5
    svg = svg_of(fbx.draw(seed(delay=2), unroll=n))
    # Read from initial values at t=0 and t=1: one node per slot.
    assert svg["nodes"]["loop@init0"][:2] == ["loop", "t=-2"]
    assert svg["nodes"]["loop@init1"][:2] == ["loop", "t=-1"]
    dashed = [e for e in svg["edges"] if e["dashed"]]
    assert all(e["labels"] == ["t-2"] for e in dashed)
    from_init = sorted((e["tail"], e["head"]) for e in dashed if "@init" in e["tail"])
    assert from_init == [("loop@init0", "cat@t0"), ("loop@init1", "cat@t1")]
    across = [e for e in dashed if "@init" not in e["tail"]]
    assert len(across) == n - 2
    assert all(step_of(e["head"]) - step_of(e["tail"]) == 2 for e in across)


def test_short_unroll_draws_only_the_slots_it_reads():
    svg = svg_of(fbx.draw(seed(delay=3), unroll=2))
    assert sorted(n for n in svg["nodes"] if "@init" in n) == ["loop@init0", "loop@init1"]


def test_unrolled_cell_states_run_from_step_to_step():
    n = 3
    svg = svg_of(fbx.draw(lstm_net(), unroll=n))
    dashed = sorted((e["tail"], e["head"], tuple(e["labels"])) for e in svg["edges"] if e["dashed"])
    assert dashed == [
        ("lstm/c@init0", "lstm@t0", ("lstm/c",)),
        ("lstm/h@init0", "lstm@t0", ("lstm/h",)),
        ("lstm@t0", "lstm@t1", ("lstm/h, lstm/c",)),
        ("lstm@t1", "lstm@t2", ("lstm/h, lstm/c",)),
    ]


def test_collapse_draws_one_box_per_step():
    n = 50
    diagram = fbx.draw(seed(delay=2), unroll=n, collapse=True)
    svg = svg_of(diagram)
    assert sorted(svg["nodes"]) == sorted(
        [f"step@t{t}" for t in range(n)] + ["loop@init0", "loop@init1"]
    )
    assert svg["clusters"] == {"cluster_initial": ["initial"]}
    dashed = [e for e in svg["edges"] if e["dashed"]]
    assert len(dashed) == 2 + (n - 2)
    across = [e for e in dashed if "@init" not in e["tail"]]
    assert all(step_of(e["head"]) - step_of(e["tail"]) == 2 for e in across)
    # The names go on the first arrow only, so that the strip stays narrow.
    first = [e for e in across if e["head"] == "step@t2"]
    assert first[0]["labels"] == ["t-2", "loop"]
    assert sum("loop" in e["labels"] for e in across) == 1


# ------------------------------------------------------------------ large drawings
def many_loops(n):
    """n layers in a chain; layer i also reads layer (i + n // 2) % n, 1 to 3 steps late."""
    x = keras.Input((1,), name="x")
    loops = [fbx.Feedback((2,), name=f"f{i}", delay=1 + i % 3) for i in range(n)]
    h, outs = x, []
    for i in range(n):
        h = keras.layers.Concatenate(name=f"c{i}")([h, loops[i]])
        outs.append(keras.layers.Dense(2, name=f"d{i}")(h))
        h = outs[-1]
    feedback = {f"f{i}": outs[(i + n // 2) % n] for i in range(n)}
    return fbx.FeedbackModel(x, h, feedback=feedback, name=f"loops{n}")


def skip_net():
    """A forward edge over two ranks (a -> add) and a cell: lanes inside a step."""
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((3,), name="loop", delay=2)
    a = keras.layers.Dense(3, name="a")(keras.layers.Concatenate(name="cat")([x, loop]))
    c = keras.layers.Dense(3, name="c")(keras.layers.Dense(3, name="b")(a))
    s = keras.layers.Add(name="add")([a, c])
    h = fbx.cell(keras.layers.GRUCell(3, name="gru"))(s)
    return fbx.FeedbackModel(x, h, feedback={"loop": s}, name="skip")


def shared_net():
    """One layer called twice: its node has a forward edge into itself."""
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((2,), name="loop")
    shared = keras.layers.Dense(2, name="shared")
    h = shared(shared(keras.layers.Add(name="add")([x, loop])))
    return fbx.FeedbackModel(x, h, feedback={"loop": h}, name="shared_net")


def expected_loops(n, steps):
    """many_loops' unrolled drawing, worked out from its definition: (nodes, solid, dashed)."""
    nodes = {f"x@t{t}" for t in range(steps)}
    solid, dashed = set(), set()
    for t in range(steps):
        nodes |= {f"{k}{i}@t{t}" for k in "cd" for i in range(n)}
        solid |= {(f"x@t{t}", f"c0@t{t}")} | {(f"c{i}@t{t}", f"d{i}@t{t}") for i in range(n)}
        solid |= {(f"d{i}@t{t}", f"c{i + 1}@t{t}") for i in range(n - 1)}
        for i in range(n):
            delay = 1 + i % 3
            if t >= delay:
                dashed.add((f"d{(i + n // 2) % n}@t{t - delay}", f"c{i}@t{t}"))
            else:
                nodes.add(f"f{i}@init{t}")
                dashed.add((f"f{i}@init{t}", f"c{i}@t{t}"))
    return nodes, solid, dashed


def numbers(text):
    values = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]
    return list(zip(values[::2], values[1::2]))


def geometry(data: bytes):
    """Boxes of nodes and clusters, and edges as (tail, head, path points, arrowhead points)."""
    boxes, clusters, edges = {}, {}, []
    for g in ET.fromstring(data).iter(f"{SVG}g"):
        cls, title = g.get("class"), g.findtext(f"{SVG}title")
        points = []
        # A node with a tooltip wraps its shapes in <g><a>: read every descendant.
        for shape in g.iter():
            if shape.tag == f"{SVG}ellipse":
                cx, cy, rx, ry = (float(shape.get(k)) for k in ("cx", "cy", "rx", "ry"))
                points += [(cx - rx, cy - ry), (cx + rx, cy + ry)]
            elif shape.tag in (f"{SVG}polygon", f"{SVG}path"):
                points += numbers(shape.get("points") or shape.get("d"))
        if cls in ("node", "cluster"):
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            (boxes if cls == "node" else clusters)[title] = (min(xs), min(ys), max(xs), max(ys))
        elif cls == "edge":
            tail, head = title.split("->")
            path = numbers(next(g.iter(f"{SVG}path")).get("d"))
            arrow = numbers(next(g.iter(f"{SVG}polygon")).get("points"))
            edges.append((tail, head, path, arrow))
    return boxes, clusters, edges


def inside(point, box, margin=0.0):
    """Whether `point` is in `box` grown by `margin` (shrunk where negative)."""
    x, y = point
    return box[0] - margin < x < box[2] + margin and box[1] - margin < y < box[3] + margin


def check_geometry(data: bytes):
    """No box overlaps another, each sits in its cluster, and every edge runs from its
    tail's border to its head's border without passing through a box."""
    boxes, clusters, edges = geometry(data)
    names = sorted(boxes)
    grid = np.array([boxes[n] for n in names])  # (nodes, 4): x0, y0, x1, y1
    overlap = (grid[:, None, 0] < grid[None, :, 2]) & (grid[None, :, 0] < grid[:, None, 2])
    overlap &= (grid[:, None, 1] < grid[None, :, 3]) & (grid[None, :, 1] < grid[:, None, 3])
    np.fill_diagonal(overlap, False)
    assert not overlap.any(), [names[i] for i in np.argwhere(overlap)[0]]
    for name, box in boxes.items():
        found = re.search(r"@(t\d+|init)\d*$", name)  # none in the cyclic view
        where = found and found.group(1).replace("init", "initial")
        cluster = clusters.get(f"cluster_{where}")
        assert cluster is None or inside(box[:2], cluster) and inside(box[2:], cluster), name
    samples, owners = [], []
    for e, (tail, head, path, arrow) in enumerate(edges):
        assert inside(path[0], boxes[tail], 2) and not inside(path[0], boxes[tail], -2)
        assert any(inside(p, boxes[head], 2) for p in arrow), (tail, head)  # its tip
        a, b = np.array(path[:-1]), np.array(path[1:])
        k = np.linspace(0, 1, 21)[1:-1, None, None]
        samples.append((a + (b - a) * k).reshape(-1, 2))
        owners += [e] * len(samples[-1])
    p = np.concatenate(samples)[:, None, :]  # every path, 19 points per piece
    hit = (grid[None, :, 0] + 1.5 < p[..., 0]) & (p[..., 0] < grid[None, :, 2] - 1.5)
    hit &= (grid[None, :, 1] + 1.5 < p[..., 1]) & (p[..., 1] < grid[None, :, 3] - 1.5)
    if hit.any():
        i, j = np.argwhere(hit)[0]
        raise AssertionError(f"{edges[owners[i]][:2]} runs through {names[j]}")
    return boxes, edges


def structure(svg):
    """What a drawing shows, whatever its layout."""
    key = lambda e: (e["tail"], e["head"], e["dashed"], tuple(e["labels"]))  # noqa: E731
    return svg["nodes"], svg["clusters"], sorted(map(key, svg["edges"]))


def test_large_unrolled_drawing_gets_positions_of_its_own():
    n, steps = 20, 3  # dot would take seconds, and minutes at 30 edges
    diagram = fbx.draw(many_loops(n), unroll=steps)
    assert "layout=nop2" in diagram.source
    svg = parse_svg(diagram.pipe(format="svg"))
    nodes, solid, dashed = expected_loops(n, steps)
    assert set(svg["nodes"]) == nodes
    assert {(e["tail"], e["head"]) for e in svg["edges"] if not e["dashed"]} == solid
    assert {(e["tail"], e["head"]) for e in svg["edges"] if e["dashed"]} == dashed
    assert sorted(svg["clusters"]) == sorted(
        ["cluster_initial", *(f"cluster_t{t}" for t in range(steps))]
    )
    check_geometry(diagram.pipe(format="svg"))
    assert "nop2" not in fbx.draw(seed(), unroll=4).source  # small drawings: dot's own layout


@pytest.mark.parametrize("n, steps", [(20, 3), (40, 3), (20, 6)])
def test_large_unrolled_drawing_grows_linearly_in_edges_and_steps(n, steps):
    """Elements, and the points of every edge's path, O(edges x steps): dot's own
    layout bends a delayed edge once per rank it crosses, O(layers) ranks each."""
    diagram = fbx.draw(many_loops(n), unroll=steps)
    _, edges = check_geometry(diagram.pipe(format="svg"))
    nodes, solid, dashed = expected_loops(n, steps)
    assert len(edges) == len(solid) + len(dashed) == 3 * n * steps
    assert len(nodes) <= (3 * n + 1) * steps
    assert all(len(path) <= 16 for _, _, path, _ in edges)  # five straight pieces at most


def force_positions(monkeypatch):
    import importlib

    module = importlib.import_module("fbexplorer.drawing")
    monkeypatch.setattr(module, "DOT_WORK_LIMIT", -1)
    monkeypatch.setattr(module, "CYCLIC_WORK_LIMIT", -1)


@pytest.mark.parametrize(
    "make, rankdir",
    [(seed, "LR"), (lambda: seed(delay=2), "TB"), (lstm_net, "LR"), (nested_net, "RL")]
    + [(forward_delay_net, "BT"), (multi_io_net, "LR"), (multi_io_net, "TB"), (skip_net, "LR")]
    + [(shared_net, "LR")],
)
def test_positions_of_our_own_draw_what_dot_draws(monkeypatch, make, rankdir):
    net = make()
    by_dot = fbx.draw(net, unroll=3, rankdir=rankdir, highlight=1)
    force_positions(monkeypatch)
    ours = fbx.draw(net, unroll=3, rankdir=rankdir, highlight=1)
    assert "layout=nop2" in ours.source and "layout=nop2" not in by_dot.source
    assert structure(svg_of(ours)) == structure(svg_of(by_dot))
    check_geometry(ours.pipe(format="svg"))


@pytest.mark.parametrize(
    "make, rankdir",
    [(seed, "LR"), (lstm_net, "TB"), (skip_net, "LR"), (multi_io_net, "BT"), (shared_net, "LR")],
)
def test_cyclic_positions_of_our_own_draw_what_dot_draws(monkeypatch, make, rankdir):
    net = make()
    by_dot = fbx.draw(net, rankdir=rankdir, highlight="out" if make is seed else None)
    force_positions(monkeypatch)
    ours = fbx.draw(net, rankdir=rankdir, highlight="out" if make is seed else None)
    assert "layout=nop2" in ours.source and "layout=nop2" not in by_dot.source
    assert structure(svg_of(ours)) == structure(svg_of(by_dot))
    check_geometry(ours.pipe(format="svg"))


def test_large_cyclic_drawing_gets_positions_of_its_own():
    n = 40  # dot: 30 s, its time about the square of the ranks the back edges span
    diagram = fbx.draw(many_loops(n))
    assert "layout=nop2" in diagram.source
    svg = parse_svg(diagram.pipe(format="svg"))
    dashed = {(e["tail"], e["head"]) for e in svg["edges"] if e["dashed"]}
    assert dashed == {(f"d{(i + n // 2) % n}", f"c{i}") for i in range(n)}
    _, edges = check_geometry(diagram.pipe(format="svg"))
    assert len(edges) == 3 * n and all(len(path) <= 16 for _, _, path, _ in edges)
    assert "nop2" not in fbx.draw(many_loops(10)).source


def test_collapsed_positions_of_our_own_draw_what_dot_draws(monkeypatch):
    net = seed(delay=3)
    by_dot = fbx.draw(net, unroll=12, collapse=True)
    force_positions(monkeypatch)
    ours = fbx.draw(net, unroll=12, collapse=True)
    assert structure(svg_of(ours)) == structure(svg_of(by_dot))
    check_geometry(ours.pipe(format="svg"))


# ------------------------------------------------------------------ highlight
def test_highlight_node_in_cyclic_view():
    source = fbx.draw(seed(), highlight="d2").source
    marked = re.findall(r"^\t(\w+) \[.*penwidth=3", source, re.M)
    assert marked == ["d2"]


def test_highlight_feedback_edge_by_name():
    svg = svg_of(fbx.draw(seed(), highlight="loop"))
    widths = {(e["tail"], e["head"]): e["width"] for e in svg["edges"]}
    assert widths[("d3", "cat")] == "3"
    assert {w for k, w in widths.items() if k != ("d3", "cat")} == {None}


def test_highlight_node_and_timestep_in_unrolled_view():
    source = fbx.draw(seed(), unroll=3, highlight=("d1", 1)).source
    assert re.findall(r'^\t\t"(\S+)" \[.*penwidth=3', source, re.M) == ["d1@t1"]
    # The step's cluster is marked too, and only that one.
    clusters = re.findall(r"subgraph (cluster_\w+) \{\n\t\t([^\n]*)", source)
    marked = [name for name, attrs in clusters if "penwidth=3" in attrs]
    assert marked == ["cluster_t1"]
    # A name alone marks the node at every step.
    source = fbx.draw(seed(), unroll=3, highlight="d1").source
    assert len(re.findall(r'"d1@t\d" \[.*penwidth=3', source)) == 3


def test_highlight_timestep_in_collapsed_view():
    source = fbx.draw(seed(), unroll=6, collapse=True, highlight=4).source
    assert re.findall(r'^\t"(step@t\d)" \[.*penwidth=3', source, re.M) == ["step@t4"]


def test_bad_options_are_named():
    net = seed()
    with pytest.raises(ValueError, match="'nope'.*Known names"):
        fbx.draw(net, highlight="nope")
    with pytest.raises(ValueError, match="timestep 5 is outside"):
        fbx.draw(net, unroll=3, highlight=5)
    with pytest.raises(ValueError, match="collapse"):
        fbx.draw(net, collapse=True)
    with pytest.raises(ValueError, match="unroll"):
        fbx.draw(net, unroll=0)
    with pytest.raises(ValueError, match="rankdir"):
        fbx.draw(net, rankdir="XY")
    with pytest.raises(ValueError, match="expects a FeedbackModel"):
        fbx.draw(keras.Sequential([keras.layers.Dense(1)]))


# ------------------------------------------------------------------ determinism
def test_same_model_gives_the_same_source():
    def sources():
        net = lstm_net()
        return [
            fbx.draw(net).source,
            fbx.draw(net, unroll=3, highlight="enc").source,
            fbx.draw(net, unroll=5, collapse=True).source,
        ]

    first = sources()
    keras.backend.clear_session()
    assert sources() == first
    assert not re.search(r"0x[0-9a-f]{6,}|\d{9,}", "".join(first))  # no ids or addresses


def test_layers_reused_elsewhere_do_not_change_the_drawing():
    net = seed()
    before = fbx.draw(net).source
    z = keras.Input((1,), name="z")
    keras.Model(z, net.step_model.get_layer("out")(keras.layers.Dense(8, name="other")(z)))
    assert fbx.draw(net).source == before


def test_saved_model_draws_the_same(tmp_path):
    net = multi_io_net()
    path = tmp_path / "multi.keras"
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert fbx.draw(loaded).source == fbx.draw(net).source
    assert fbx.draw(loaded, unroll=2).source == fbx.draw(net, unroll=2).source


# ------------------------------------------------------------------ without dot
def test_without_dot_source_works_and_render_says_how_to_install(monkeypatch, tmp_path):
    diagram = fbx.draw(seed(), unroll=2)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert "cluster_t1" in diagram.source
    for attempt in (
        lambda: diagram.pipe(format="svg"),
        lambda: diagram.render(tmp_path / "drawing", format="svg"),
    ):
        with pytest.raises(GraphvizNotFoundError) as info:
            attempt()
        message = str(info.value)
        for hint in ("apt-get install graphviz", "brew install graphviz", "conda install graphviz"):
            assert hint in message
        assert isinstance(info.value, graphviz.ExecutableNotFound)
    # Jupyter's display falls back to the in-browser renderer.
    bundle = diagram._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle  # (data, metadata) is allowed
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "image/svg+xml" not in data
    widget = diagram.to_widget()
    assert widget.dot_source == diagram.source


def test_with_dot_jupyter_gets_svg():
    diagram = fbx.draw(seed())
    assert isinstance(diagram, FeedbackDiagram)
    bundle = diagram._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith("<?xml")


# ------------------------------------------------------------------ README figures
def test_committed_figures_show_the_current_drawing():
    """docs/*.svg come from docs/make_figures.py; stale pictures fail here."""
    import importlib.util
    from pathlib import Path

    docs = Path(__file__).parents[1] / "docs"
    spec = importlib.util.spec_from_file_location("make_figures", docs / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.seed_network()
    for name, diagram in (("cyclic", fbx.draw(net)), ("unrolled", fbx.draw(net, unroll=3))):
        committed, fresh = parse_svg((docs / f"{name}.svg").read_bytes()), svg_of(diagram)
        assert committed["nodes"] == fresh["nodes"]
        assert committed["clusters"] == fresh["clusters"]
        key = lambda e: (e["tail"], e["head"], e["dashed"], tuple(e["labels"]))  # noqa: E731
        assert sorted(map(key, committed["edges"])) == sorted(map(key, fresh["edges"]))
