"""The explorer widget, driven headless: the frames it sends to the browser against
fbx.trace and fbx.compare_stateful (decoded from the view's base64), the node
fills against a numpy reference, where the drawing shows each node, the
browser-side links, TraceCallback, save_html, the saved-notebook size, errors."""

import json
import pathlib
import re
import types
import xml.etree.ElementTree as ET

import graphviz
import ipywidgets as widgets
import keras
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from helpers import readme_network
from ipywidgets.widgets.widget_link import Link

import fbexplorer as fbx
from fbexplorer.view import ExplorerView, decode

SVG = "{http://www.w3.org/2000/svg}"
HIGHLIGHT = "#c2185b"  # drawing.py's colour for what `highlight` marks
T = 6


def seed():
    """The README's network, small: x -> cat -> d1 -> d2 -> d3 -> out, d3 fed back into d1."""
    keras.utils.set_random_seed(0)
    return readme_network(units=4, name="seed")


NET = seed()
X = np.random.default_rng(0).uniform(-1, 1, size=(3, T, 1)).astype("float32")


@pytest.fixture
def ex():
    return fbx.explore(NET, X)


def reference(node, sample=0, **kwargs):
    """(t, unit) values of one node and sample, straight from fbx.trace."""
    return fbx.wide(fbx.trace(NET, X, nodes=node, **kwargs), node=node).loc[sample].to_numpy()


def runs(ex):
    """{run name: (epoch, t, unit)} as the browser receives them."""
    data = ex.view.data
    epochs = max(1, len(data["epochs"]))
    return {
        r["name"]: decode(r["values"], (epochs, data["length"], data["units"]))
        for r in data["runs"]
    }


def fills(ex):
    """{node: (epoch, t)}: what fills each node's box, as the browser receives it."""
    data, colour = ex.view.data, ex.view.data["colour"]
    shape = (max(1, len(data["epochs"])), len(colour["names"]), data["length"])
    values = decode(colour["values"], shape)
    return {name: values[:, i] for i, name in enumerate(colour["names"])}


def titles(svg: str) -> dict:
    """{element id: title} of the drawing's nodes, edges and clusters."""
    root = ET.fromstring(re.sub(r"^.*?(<svg)", r"\1", svg, flags=re.S))
    return {
        g.get("id"): g.find(f"{SVG}title").text
        for g in root.iter(f"{SVG}g")
        if g.get("class") in ("node", "edge", "cluster")
    }


def highlighted(svg: str) -> tuple[set, set]:
    """(node names, edge titles) drawn in the highlight colour."""
    root = ET.fromstring(re.sub(r"^.*?(<svg)", r"\1", svg, flags=re.S))
    nodes, edges = set(), set()
    for group in root.iter(f"{SVG}g"):
        kind = group.get("class")
        if kind not in ("node", "edge"):
            continue
        strokes = {el.get("stroke") for el in group.iter() if el.get("stroke")}
        if HIGHLIGHT in strokes:
            title = group.find(f"{SVG}title").text
            (nodes if kind == "node" else edges).add(title)
    return nodes, edges


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the parts
def test_parts_and_layout(ex):
    assert isinstance(ex, widgets.VBox)
    assert isinstance(ex.view, ExplorerView)
    shown = list(walk(ex))
    for part in (ex.node, ex.sample, ex.play, ex.step, ex.mode, ex.colour, ex.unit, ex.view):
        assert any(w is part for w in shown)
    assert ex.epoch is None  # no TraceCallback, no epoch slider
    assert "<svg" in ex.view.graph["svg"] and ex.note.value == ""
    assert isinstance(ex.play, widgets.Play) and isinstance(ex.step, widgets.IntSlider)
    assert (ex.step.min, ex.step.max, ex.play.min, ex.play.max) == (0, T - 1, 0, T - 1)
    # Every node fbx.trace records, named as it names them; the fed-back value first shown.
    assert list(ex.node.options) == list(fbx.trace(NET, X[:1])["node"].cat.categories)
    assert ex.node.value == "loop"
    assert [v for _, v in ex.sample.options] == [0, 1, 2]
    assert ex.view.data["length"] == T and ex.view.data["epochs"] == []


def test_reopening_reuses_the_compiled_trace_and_dot_runs_once(monkeypatch):
    net = seed()  # a fresh model: nothing compiled yet
    pipes, pipe = [], graphviz.Digraph.pipe

    def counted(self, *args, **kwargs):
        pipes.append(kwargs.get("format"))
        return pipe(self, *args, **kwargs)

    monkeypatch.setattr(graphviz.Digraph, "pipe", counted)
    first = fbx.explore(net, X)
    assert pipes == ["svg"]  # one drawing by `dot` per open
    runs = dict(net._fbx_probes.runs)  # the compiled trace, per node list
    assert len(runs) == 1
    again = fbx.explore(net, X)
    assert pipes == ["svg", "svg"] and net._fbx_probes.runs == runs
    if keras.backend.backend() == "tensorflow":  # built (traced) once, run twice
        assert next(iter(runs.values())).experimental_get_tracing_count() == 1
    assert again.view.data == first.view.data


def test_play_and_slider_drive_the_view_in_the_browser(ex):
    play_step, step_view = ex.links
    for link in ex.links:
        assert type(link) is Link  # two-way, in the front end (jslink), not a dlink
    assert play_step.source == (ex.play, "value") and play_step.target == (ex.step, "value")
    assert step_view.source == (ex.step, "value") and step_view.target == (ex.view, "t")
    # Nothing in the kernel listens to the step: playback is the browser's.
    assert not ex.step._trait_notifiers.get("value", {}).get("change")


def test_the_module_beside_the_class_is_the_widget_code():
    here = pathlib.Path(fbx.__file__).parent
    assert ExplorerView()._esm == (here / "explorer.js").read_text()
    assert "export default" in ExplorerView()._esm


# ------------------------------------------------------- frames for the browser
def test_frames_sent_are_the_trace(ex):
    close(runs(ex)["value"][0], reference("loop"))
    ex.node.value = "d2"
    assert ex.view.data["node"] == "d2" and ex.view.data["units"] == 4
    close(runs(ex)["value"][0], reference("d2"))
    ex.node.value = "out"
    close(runs(ex)["value"][0], reference("out"))


def test_sample_picker_changes_the_frames(ex):
    ex.node.value = "d3"
    first = runs(ex)["value"][0]
    ex.sample.value = 2
    assert ex.view.data["sample"] == 2
    close(runs(ex)["value"][0], reference("d3", sample=2))
    assert not np.allclose(runs(ex)["value"][0], first)


def test_samples_and_initial_state_reach_the_trace():
    start = np.full((4,), 0.5, "float32")
    ex = fbx.explore(NET, X, nodes=["loop", "d1"], samples=[2, 0], initial_state={"loop": start})
    assert list(ex.node.options) == ["loop", "d1"]
    assert [v for _, v in ex.sample.options] == [0, 2]
    ex.sample.value = 2
    expected = reference("loop", sample=2, initial_state={"loop": start})
    close(runs(ex)["value"][0], expected)
    close(runs(ex)["value"][0, 0], start)
    close(ex.values("loop")[1], expected)  # Explorer.values: samples in the picker's order


def test_node_fills_are_mean_norm_or_a_unit_of_each_node(ex):
    ex.sample.value = 1
    full = fbx.trace(NET, X)
    names = list(full["node"].cat.categories)
    per_node = {n: fbx.wide(full, node=n).loc[1].to_numpy() for n in names}
    assert ex.view.data["colour"]["names"] == names
    got = fills(ex)
    for n in names:  # numpy reference, loop by loop
        close(got[n][0], [np.mean(row) for row in per_node[n]])
    lo, hi = ex.view.data["colour"]["range"]
    assert hi == pytest.approx(max(np.abs(np.mean(v, axis=1)).max() for v in per_node.values()))
    assert lo == -hi  # diverging, centred on 0
    ex.colour.value = "norm"
    got = fills(ex)
    for n in names:
        close(got[n][0], [np.sqrt(sum(x * x for x in row)) for row in per_node[n]])
    assert ex.view.data["colour"]["range"][0] == 0
    ex.colour.value = "unit"
    assert not ex.unit.disabled
    ex.unit.value = 3
    got = fills(ex)
    assert ex.view.data["colour"]["by"] == "unit 3"
    close(got["d1"][0], per_node["d1"][:, 3])
    assert np.isnan(got["out"]).all() and np.isnan(got["x"]).all()  # one unit only: unfilled
    # Delayed edges are sized by the norm of what they carry.
    size = ex.view.data["size"]
    norms = decode(size["values"], (1, len(names), T))[0, names.index("loop")]
    close(norms, np.linalg.norm(per_node["loop"], axis=1))
    assert size["max"] == pytest.approx(norms.max())


# -------------------------------------------------------------------- drawings
def test_drawing_targets_name_the_drawn_elements(ex):
    graph = ex.view.graph
    drawn = titles(graph["svg"])
    for name in ("x", "cat", "d1", "d2", "d3", "out"):
        target = graph["targets"][name]
        assert target["kind"] == "node" and [drawn[i] for i in target["ids"]] == [name]
    loop = graph["targets"]["loop"]
    assert loop["kind"] == "edge" and [drawn[i] for i in loop["ids"]] == ["d3->cat"]


def test_node_change_highlights_it_in_the_drawing(ex):
    # "loop" is the delayed edge d3 -> cat: the edge is marked, no box.
    assert highlighted(ex.view.graph["svg"]) == (set(), {"d3->cat"})
    ex.node.value = "d1"
    assert highlighted(ex.view.graph["svg"]) == ({"d1"}, set())
    ex.node.value = "d2"
    assert highlighted(ex.view.graph["svg"]) == ({"d2"}, set())


def test_layer_called_twice_highlights_the_layer():
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((2,), name="loop")
    shared = keras.layers.Dense(2, name="shared")
    h = shared(shared(keras.layers.Add(name="add")([x, loop])))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    ex = fbx.explore(net, np.ones((1, 3, 2), "float32"), nodes=["shared", "shared#1"])
    ex.node.value = "shared#1"  # fbx.trace's name for the second call
    assert highlighted(ex.view.graph["svg"]) == ({"shared"}, set())
    # The box shows the layer's first call; the second has no box of its own.
    assert list(ex.view.graph["targets"]) == ["shared"]


def test_unrolled_window_is_drawn_when_asked(ex):
    assert ex.view.unrolled_graph == {}  # drawn on first use only
    ex.view.unrolled = True  # the toggle in the browser
    g = ex.view.unrolled_graph
    assert g["window"] == 5
    drawn = titles(g["svg"])
    assert [drawn[i] for _, i in g["clusters"]] == [f"cluster_t{k}" for k in range(5)]
    seen = set()
    for name, k, kind, gid in g["targets"]:
        seen.add((name, k, kind))
        if kind == "node":
            assert drawn[gid] == f"{name}@t{k}"
        elif kind == "initial":
            assert drawn[gid] == f"{name}@init{k}"
        else:
            assert drawn[gid].endswith(f"@t{k}") and name == "loop"
    assert {("d1", k, "node") for k in range(5)} <= seen
    assert ("loop", 0, "initial") in seen and ("loop", 3, "edge") in seen
    narrow = fbx.explore(NET, X[:, :3], window=9)
    assert narrow.window == 3  # never more steps than the sequence has


def test_drawings_with_positions_of_our_own_show_the_same_targets(ex, monkeypatch):
    """Where dot would take long, the drawing is placed by fbexplorer (`_strip.py`):
    the explorer finds every node, initial value and delayed edge in it as in dot's."""
    import importlib

    ex.view.unrolled = True
    by_dot = ex.view.unrolled_graph
    module = importlib.import_module("fbexplorer.drawing")
    monkeypatch.setattr(module, "DOT_WORK_LIMIT", -1)
    monkeypatch.setattr(module, "CYCLIC_WORK_LIMIT", -1)
    ours = fbx.explore(NET, X)
    assert ours.view.graph["svg"] != ex.view.graph["svg"]  # laid out otherwise
    kinds = lambda g: {n: t["kind"] for n, t in g["targets"].items()}  # noqa: E731
    assert kinds(ours.view.graph) == kinds(ex.view.graph)  # the cyclic view's boxes and edges
    ours.view.unrolled = True
    placed = ours.view.unrolled_graph
    assert placed["svg"] != by_dot["svg"]
    drawn, drawn_by_dot = titles(placed["svg"]), titles(by_dot["svg"])
    key = lambda g, names: sorted((n, k, kind, names[i]) for n, k, kind, i in g["targets"])  # noqa: E731
    assert key(placed, drawn) == key(by_dot, drawn_by_dot)
    assert [drawn[i] for _, i in placed["clusters"]] == [f"cluster_t{k}" for k in range(5)]


# --------------------------------------------------------------------- mode
def test_stateful_view_shows_compare_stateful(ex):
    assert not ex.mode.disabled and ex.chunks == 2
    ex.node.value = "d1"
    ex.sample.value = 1
    ex.mode.value = "stateful"
    cmp = fbx.compare_stateful(NET, X, chunks=2, nodes=["d1"])
    got = runs(ex)
    assert [r["dash"] for r in ex.view.data["runs"]] == [False, True]
    for run in ("stateful", "stateless"):
        expected = fbx.wide(cmp, node="d1", values=run).loc[1].to_numpy()
        close(got[run][0], expected)
    # The view shows something the trace does not: chunk 2 restarted from zeros.
    assert not np.allclose(got["stateless"][0, 3:], got["stateful"][0, 3:])
    assert ex.view.data["boundaries"] == [3] and ex.view.data["difference"]
    close(ex.values("d1", "difference")[1], fbx.wide(cmp, node="d1", values="difference").loc[1])
    ex.mode.value = "stateless"
    assert ex.view.data["boundaries"] == [] and list(runs(ex)) == ["value"]


def test_stateful_view_off_where_it_cannot_differ():
    x = keras.Input((2,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(2, name="d")(x), feedback={})
    ex = fbx.explore(plain, np.ones((1, 4, 2), "float32"))
    assert ex.mode.disabled and ex.comparison is None
    ex = fbx.explore(NET, X, chunks=1)
    assert ex.mode.disabled and ex.comparison is None
    ex = fbx.explore(NET, X, chunks=3)
    ex.mode.value = "stateful"
    assert ex.view.data["boundaries"] == [2, 4]


# ------------------------------------------------------------ training, watched
def small_net(seed=1):
    keras.utils.set_random_seed(seed)
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((3,), name="loop")
    h = keras.layers.Dense(3, activation="tanh", name="h")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    y = keras.layers.Dense(1, name="y")(h)
    net = fbx.FeedbackModel(x, y, feedback={"loop": h})
    net.compile(keras.optimizers.SGD(0.1), "mse")
    return net


def test_trace_callback_traces_each_epoch():
    net = small_net()
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (16, 5, 1)).astype("float32")
    y = np.cumsum(x, axis=1)
    probe = x[:2]
    before = fbx.trace(net, probe, nodes=["h", "loop"])
    watch = fbx.TraceCallback(probe, every=2, nodes=["h", "loop"])
    net.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[watch])
    assert list(watch.frames) == [0, 2, 3]  # untrained, every 2nd epoch, and the last
    close(watch.frames[0]["value"], before["value"])
    after = fbx.trace(net, probe, nodes=["h", "loop"])
    close(watch.frames[3]["value"], after["value"])
    assert not np.allclose(watch.frames[0]["value"], watch.frames[3]["value"])
    frame = watch.frame
    assert list(frame.columns[:2]) == ["epoch", "sample"] and frame["epoch"].dtype == np.int32
    assert sorted(frame["epoch"].unique()) == [0, 2, 3] and len(frame) == 3 * len(before)
    # A second fit goes on counting epochs.
    net.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[watch])
    assert list(watch.frames) == [0, 2, 3, 4]


def test_explore_callback_adds_an_epoch_slider():
    net = small_net()
    x = np.random.default_rng(2).uniform(-1, 1, (8, 4, 1)).astype("float32")
    watch = fbx.TraceCallback(x[:2])
    net.fit(x, np.cumsum(x, axis=1), epochs=2, batch_size=8, verbose=0, callbacks=[watch])
    ex = fbx.explore(watch)
    assert isinstance(ex.epoch, widgets.SelectionSlider)
    assert [label for label, _ in ex.epoch.options] == ["0", "1", "2"]
    assert ex.epoch.index == 2 and ex.view.epoch == 2  # opens on the last epoch
    assert any(w is ex.epoch for w in walk(ex))
    link = ex.links[-1]
    assert type(link) is Link and link.source == (ex.epoch, "index")
    assert link.target == (ex.view, "epoch")
    assert ex.view.data["epochs"] == [0, 1, 2] and ex.mode.disabled
    ex.node.value = "h"
    got = runs(ex)["value"]  # (epoch, t, unit): every epoch sent at once
    for i, epoch in enumerate([0, 1, 2]):
        expected = fbx.wide(watch.frames[epoch], node="h").loc[0].to_numpy()
        close(got[i], expected)
        close(fills(ex)["h"][i], expected.mean(axis=1))
        close(ex.values("h", epoch=epoch)[0], expected)
    assert not np.allclose(got[0], got[2])
    # The portrait: one basis fitted over every epoch, so the axes stay put.
    loop = np.stack(
        [fbx.wide(f, node="loop").to_numpy().reshape(2, 4, 3) for f in watch.frames.values()]
    )
    coords, _ = fbx.pca_project({"loop": loop.reshape(6, 4, 3)}, 2)
    got, data = portrait_data(ex)
    close(got, coords.reshape(3, 2, 4, 2)[:, 0])
    assert not np.allclose(got[0], got[2])
    fixed = types.SimpleNamespace(
        states={"loop": loop[-1, 0, -1:]}, frame=pd.DataFrame({"stable": [True]})
    )
    _, data = portrait_data(fbx.explore(watch, fixed_points=fixed))
    assert data["fixed_epoch"] == 2  # drawn at the last epoch, the weights they are of


# -------------------------------------------------------------------- export
def test_save_html_holds_everything_to_play_offline(ex, tmp_path):
    ex.node.value = "d1"
    ex.colour.value = "norm"
    ex.step.value = 4
    path = ex.save_html(tmp_path / "ex.html")
    page = pathlib.Path(path).read_text()
    assert "<script src" not in page and "<link" not in page  # nothing fetched
    state = json.loads(
        re.search(r'<script id="fbx-state" type="application/json">(.*?)</script>', page, re.S)
        .group(1)
        .replace("<\\/", "</")
    )
    assert state["controls"] is True and state["data"] == ex.view.data
    assert state["t"] == 4  # opens where the slider is
    assert state["unrolled_graph"]["svg"].startswith("<?xml")  # drawn for the page
    close(decode(state["data"]["runs"][0]["values"], (1, T, 4))[0], reference("d1"))
    assert "export default" in page and "function render" in page


def test_interrupted_save_html_keeps_the_old_page(ex, tmp_path, monkeypatch):
    """A disk that fills halfway through the page: the page saved before survives."""
    import builtins
    import errno
    import os

    path = tmp_path / "ex.html"
    ex.save_html(path)
    path.chmod(0o640)
    before = path.read_bytes()
    real_open = builtins.open

    class HalfFull:  # writes half of what it is given, then the disk is full
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            self.file.write(text[: len(text) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        return HalfFull(opened) if "w" in mode else opened

    ex.step.value = 3  # a different page
    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ex.save_html(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ex.html"]  # no temporary file left behind
    ex.save_html(path)  # and a save that completes replaces it, keeping its permissions
    assert path.read_bytes() != before and (path.stat().st_mode & 0o777) == 0o640


def test_figure_for_papers(ex):
    ex.node.value = "d2"
    fig = ex.figure()
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    close(np.stack([np.asarray(d.y) for d in fig.data], axis=1), reference("d2"))
    ex.step.value = 2
    assert ex.figure().layout.shapes[0].x0 == 2  # the marker at the slider's step
    heat = ex.figure("heatmap")
    close(np.asarray(heat.data[0].z), reference("d2").T)


@pytest.mark.slow
def test_saved_notebook_with_an_explorer_stays_under_a_megabyte(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    code = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
import fbexplorer as fbx
keras.utils.set_random_seed(0)
x = keras.Input((1,), name="x")
loop = fbx.Feedback((8,), name="loop")
h1 = keras.layers.Dense(8, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
h2 = keras.layers.Dense(8, activation="tanh", name="d2")(h1)
h3 = keras.layers.Dense(8, activation="tanh", name="d3")(h2)
net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h3), feedback={"loop": h3})
X = np.random.default_rng(0).uniform(-1, 1, (4, 100, 1)).astype("float32")
ex = fbx.explore(net, X)
ex.mode.value = "stateful"
ex
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=240, kernel_name="python3", store_widget_state=True).execute()
    path = tmp_path / "one_explorer.ipynb"
    nbformat.write(nb, path)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [
        {"model_id": k, **m}
        for k, m in state.items()
        if m["state"].get("_anywidget_id", "").endswith("ExplorerView")
    ]
    assert len(views) == 1 and views[0]["state"]["data"]["units"] == 8  # the state was saved
    size = path.stat().st_size
    assert size < 1_000_000, f"a saved notebook with one explorer takes {size} bytes"
    # An HTML export keeps the widget state, frames included, for a page with no kernel.
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(nb)
    saved = re.search(
        r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', page, re.S
    )
    exported = json.loads(saved.group(1))["state"]
    assert exported[views[0]["model_id"]]["state"]["data"] == views[0]["state"]["data"]
    assert "application/vnd.jupyter.widget-view+json" in page


# ------------------------------------------------------------------- portrait
def portrait_data(ex):
    """(coords (epoch, t, 2), the rest) of the portrait tab, as the browser receives them."""
    data = ex.view.data["panels"]["portrait"]
    epochs = max(1, len(ex.view.data["epochs"]))
    return decode(data["coords"], (epochs, ex.view.data["length"], 2)), data


def test_portrait_is_the_states_on_their_principal_components(ex):
    arrays = fbx.trace(NET, X, nodes=NET.feedback_names, as_arrays=True)
    coords, pca = fbx.pca_project(arrays, 2)  # fitted over every sample
    got, data = portrait_data(ex)
    assert data["nodes"] == ["loop"] and "fixed" not in data
    close(got[0], coords[0])
    close(data["variance"], pca.explained_variance_ratio)
    ex.sample.value = 2
    close(portrait_data(ex)[0][0], coords[2])
    ex.node.value = "d2"  # the portrait is the model's, whichever node is chosen
    close(portrait_data(ex)[0][0], coords[2])
    # States left out of `nodes` are traced for it; samples in the picker's order.
    other = fbx.explore(NET, X, nodes=["d1"], samples=[2, 0])
    arrays = fbx.trace(NET, X, nodes="loop", samples=[2, 0], as_arrays=True)
    coords, pca = fbx.pca_project(arrays, 2)
    close(portrait_data(other)[0][0], coords[1])  # sample 0
    other.sample.value = 2
    close(portrait_data(other)[0][0], coords[0])
    fig = ex.figure("portrait")
    close(
        np.stack([fig.data[0].x, fig.data[0].y], axis=1),
        fbx.pca_project(fbx.trace(NET, X, nodes="loop", as_arrays=True), 2)[0][2],
    )
    assert fig.data[0].name == "sample 2" and fig.data[-1].name == "t=0"


def test_portrait_draws_fixed_points_in_the_same_plane():
    fp = fbx.fixed_points(NET, {"x": np.zeros(1, "float32")}, initial=X, n_starts=8)
    assert len(fp) >= 1
    ex = fbx.explore(NET, X, fixed_points=fp)
    _, pca = fbx.pca_project(fbx.trace(NET, X, nodes="loop", as_arrays=True), 2)
    expected = pca.transform(fp.states)
    _, data = portrait_data(ex)
    close(decode(data["fixed"], (len(fp), 2)), expected)
    assert data["stable"] == fp.frame["stable"].tolist() and data["fixed_epoch"] == 0
    ex.step.value = 3
    fig = ex.figure("portrait")
    drawn = [d for d in fig.data if d.name and "fixed points" in d.name]
    assert sum(len(d.x) for d in drawn) == len(fp)
    for d in drawn:
        close(np.stack([d.x, d.y], axis=1), expected[np.asarray(d.customdata)])
    marker = fig.data[-1]
    assert marker.name == "t=3"
    close([marker.x[0], marker.y[0]], [fig.data[0].x[3], fig.data[0].y[3]])
    # Stable and unstable points are told apart (any object with .states and .frame).
    two = types.SimpleNamespace(
        states={"loop": np.stack([fp.states["loop"][0], -fp.states["loop"][0] + 0.5])},
        frame=pd.DataFrame({"stable": [True, False]}),
    )
    _, data = portrait_data(fbx.explore(NET, X, fixed_points=two))
    assert data["stable"] == [True, False]
    close(decode(data["fixed"], (2, 2)), pca.transform(two.states))


def test_portrait_marks_kinds_hover_and_attractors():
    fp = fbx.fixed_points(NET, {"x": np.zeros(1, "float32")}, initial=X, n_starts=8)
    census = types.SimpleNamespace(
        states={"loop": fp.states["loop"][:1]},
        frame=pd.DataFrame({"kind": ["fixed"], "period": [1], "share": [1.0]}),
    )
    ex = fbx.explore(NET, X, fixed_points=fp, attractors=census)
    _, pca = fbx.pca_project(fbx.trace(NET, X, nodes="loop", as_arrays=True), 2)
    (marks,) = portrait_data(ex)[1]["marks"]
    assert marks["epoch"] == 0 and marks["kinds"] == list(fp.frame["stability"].astype(str))
    close(np.array(marks["points"]), pca.transform(fp.states))
    for info, (_, row) in zip(marks["info"], fp.frame.iterrows()):
        close(info["spectral_radius"], row["spectral_radius"])
        assert info["stability"] == row["stability"] and "reads the slowest mode" in info["readout"]
    close(np.array(marks["attractors"]["points"]), pca.transform(census.states))
    assert marks["attractors"]["info"][0]["share"] == 1.0
    drawn = {d.name: d for d in ex.figure("portrait").data}  # the static figure draws them too
    close([drawn["attractors"].x[0], drawn["attractors"].y[0]], marks["attractors"]["points"][0])


def test_a_click_on_the_graph_selects_the_node_and_the_track_shows_inputs_and_targets(ex):
    ex.view.selected = "d2"  # what a click on d2's box sends
    assert ex.node.value == "d2" and ex.view.data["node"] == "d2"
    ex.view.selected = "no such node"  # a stale click changes nothing
    assert ex.node.value == "d2"
    targets = np.cumsum(X, axis=1)
    ex = fbx.explore(NET, X, targets=targets)
    ex.sample.value = 2
    track = {k["role"]: k for k in ex.view.data["panels"]["track"]}
    assert set(track) == {"input", "target", "output"}
    close(decode(track["input"]["values"], (1, T, 1))[0], X[2])
    close(decode(track["target"]["values"], (1, T, 1))[0], targets[2])
    close(decode(track["output"]["values"], (1, T, 1))[0], reference("out", 2))
    with pytest.raises(ValueError, match=r"targets name outputs of the model, among \['out'\]"):
        fbx.explore(NET, X, targets={"y": targets})


def test_no_portrait_without_state():
    x = keras.Input((2,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(2, name="d")(x), feedback={})
    ex = fbx.explore(plain, np.ones((1, 4, 2), "float32"))
    assert ex.projection is None and "portrait" not in ex.view.data["panels"]
    with pytest.raises(ValueError, match="no portrait here"):
        ex.figure("portrait")
    one = keras.Input((1,), name="x")
    loop = fbx.Feedback((1,), name="loop")  # one unit: no plane to draw
    h = keras.layers.Add(name="h")([one, loop])
    net = fbx.FeedbackModel(one, h, feedback={"loop": h})
    ex = fbx.explore(net, np.ones((1, 4, 1)))
    assert ex.projection is None and "portrait" not in ex.view.data["panels"]
    fp = types.SimpleNamespace(
        states={"loop": np.zeros((1, 1))}, frame=pd.DataFrame({"stable": [1]})
    )
    with pytest.raises(
        ValueError, match=r"fixed_points are drawn on the portrait.*\['loop'\], 1 unit\. "
    ):
        fbx.explore(net, np.ones((1, 4, 1)), fixed_points=fp)


# --------------------------------------------------------------------- errors
def test_bad_inputs_name_the_problem():
    with pytest.raises(
        ValueError, match="fbx.explore expects a FeedbackModel or a fbx.TraceCallback.*Sequential"
    ):
        fbx.explore(keras.Sequential([keras.layers.Dense(1)]), X)
    with pytest.raises(ValueError, match="no node 'nope'. Known nodes"):
        fbx.explore(NET, X, nodes=["d1", "nope"])
    with pytest.raises(ValueError, match="sample index 5 is out of range for a batch of 3"):
        fbx.explore(NET, X, samples=[0, 5])
    with pytest.raises(ValueError, match="samples=4 .* batch has 3"):
        fbx.explore(NET, X, samples=4)
    with pytest.raises(ValueError, match="chunks=9, but the sequence has 6 steps"):
        fbx.explore(NET, X, chunks=9)
    with pytest.raises(ValueError, match="needs the inputs to trace. Received: inputs=None"):
        fbx.explore(NET)
    with pytest.raises(ValueError, match="`window` is the number of steps.*Received: window=0"):
        fbx.explore(NET, X, window=0)
    with pytest.raises(ValueError, match="`every` is a number of epochs.*Received: every=0"):
        fbx.TraceCallback(X, every=0)
    watch = fbx.TraceCallback(X)
    with pytest.raises(ValueError, match="recorded nothing yet.*callbacks=\\[callback\\]"):
        _ = watch.frame
    with pytest.raises(ValueError, match="takes no inputs. Received: inputs of type ndarray"):
        fbx.explore(watch, X)
    plain = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="traces a FeedbackModel. Received: a Sequential in fit"):
        plain.fit(np.ones((2, 1)), np.ones((2, 1)), epochs=1, verbose=0, callbacks=[watch])
    with pytest.raises(ValueError, match="Explorer.figure: panel is one of"):
        fbx.explore(NET, X).figure("nope")
    with pytest.raises(ValueError, match="no epoch 3 was traced"):
        fbx.explore(NET, X).values("d1", epoch=3)
    with pytest.raises(ValueError, match="fixed_points is a result of fbx.fixed_points"):
        fbx.explore(NET, X, fixed_points=np.zeros(4))
    other = types.SimpleNamespace(
        states={"h": np.zeros((1, 4))}, frame=pd.DataFrame({"stable": [True]})
    )
    with pytest.raises(
        ValueError, match=r"not of model 'seed'. Expected .* states \['loop'\]. Received: .*\['h'\]"
    ):
        fbx.explore(NET, X, fixed_points=other)


def test_without_dot_the_drawing_renders_in_the_browser(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on PATH
    ex = fbx.explore(NET, X)
    assert "dot</code> program is not installed" in ex.note.value
    assert ex.view.graph == {}  # nothing to light up; the frames still play
    view = ex.graph_view
    assert type(view).__name__ == "GraphvizAnyWidget" and any(w is view for w in walk(ex))
    assert re.search(r"^\td3 -> cat \[.*penwidth=3", view.dot_source, re.M)  # "loop"
    ex.node.value = "d2"
    marked = re.findall(r"^\t(\w+) \[.*penwidth=3", view.dot_source, re.M)
    assert marked == ["d2"]
