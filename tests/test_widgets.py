"""The explorer widget, driven headless: observers, data against fbx.trace and
fbx.compare_stateful, the highlighted drawing, the browser-side link, errors."""

import re
import xml.etree.ElementTree as ET

import ipywidgets as widgets
import keras
import numpy as np
import plotly.graph_objects as go
import pytest
from ipywidgets.widgets.widget_link import Link

import fbexplorer as fbx

SVG = "{http://www.w3.org/2000/svg}"
HIGHLIGHT = "#c2185b"  # draw.py's colour for what `highlight` marks
T = 6


def seed():
    """The README's network, small: x -> cat -> d1 -> d2 -> d3 -> out, d3 fed back into d1."""
    keras.utils.set_random_seed(0)
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((4,), name="loop")
    h1 = keras.layers.Dense(4, activation="tanh", name="d1")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    h2 = keras.layers.Dense(4, activation="tanh", name="d2")(h1)
    h3 = keras.layers.Dense(4, activation="tanh", name="d3")(h2)
    y = keras.layers.Dense(1, name="out")(h3)
    return fbx.FeedbackModel(inputs=x, outputs=y, feedback={"loop": h3}, name="seed")


NET = seed()
X = np.random.default_rng(0).uniform(-1, 1, size=(3, T, 1)).astype("float32")


@pytest.fixture
def ex():
    return fbx.explore(NET, X)


def reference(node, sample=0, **kwargs):
    """(t, unit) values of one node and sample, straight from fbx.trace."""
    return fbx.wide(fbx.trace(NET, X, nodes=node, **kwargs), node=node).loc[sample].to_numpy()


def lines(figure, run="value"):
    """The figure's y-data as (t, unit), for the lines of one run."""
    picked = [d for d in figure.data if d.meta["run"] == run]
    picked.sort(key=lambda d: d.meta["unit"])
    return np.stack([np.asarray(d.y) for d in picked], axis=1)


def readout(ex):
    """The readout table: {unit: [values...]}."""
    rows = re.findall(r"<tr><td>(\d+)</td>(.*?)</tr>", ex.readout.value)
    return {int(u): [float(v) for v in re.findall(r"<td>([^<]*)</td>", rest)] for u, rest in rows}


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


# ---------------------------------------------------------------- the parts
def test_parts_and_layout(ex):
    assert isinstance(ex, widgets.VBox)
    assert isinstance(ex.figure, go.FigureWidget)
    shown = list(walk(ex))
    for part in (ex.graph, ex.node, ex.sample, ex.play, ex.step, ex.mode, ex.figure, ex.readout):
        assert any(w is part for w in shown)
    assert isinstance(ex.graph, widgets.HTML) and "<svg" in ex.graph.value
    assert isinstance(ex.play, widgets.Play) and isinstance(ex.step, widgets.IntSlider)
    assert (ex.step.min, ex.step.max, ex.play.min, ex.play.max) == (0, T - 1, 0, T - 1)
    # Every node fbx.trace records, named as it names them; the fed-back value first shown.
    assert list(ex.node.options) == list(fbx.trace(NET, X[:1])["node"].cat.categories)
    assert ex.node.value == "loop"
    assert [v for _, v in ex.sample.options] == [0, 1, 2]


def test_play_is_linked_to_the_slider_in_the_browser(ex):
    (link,) = ex.links
    assert type(link) is Link  # two-way, in the front end (jslink), not a dlink
    assert link.source == (ex.play, "value") and link.target == (ex.step, "value")


# ------------------------------------------------------------ observers fire
def test_step_moves_the_marker_and_updates_the_readout(ex):
    ex.node.value = "d1"
    marker = ex.figure.layout.shapes[0]
    assert (marker.type, marker.x0, marker.x1, marker.yref) == ("line", 0, 0, "paper")
    ex.step.value = 3
    assert (ex.figure.layout.shapes[0].x0, ex.figure.layout.shapes[0].x1) == (3, 3)
    assert "t=3" in ex.readout.value
    expected = reference("d1")[3]
    got = readout(ex)
    assert sorted(got) == list(range(4))
    np.testing.assert_allclose([got[u][0] for u in range(4)], expected, rtol=1e-5, atol=1e-6)


def test_node_change_redraws_the_figure(ex):
    before = lines(ex.figure)
    ex.node.value = "d2"
    assert {d.meta["node"] for d in ex.figure.data} == {"d2"}
    np.testing.assert_allclose(lines(ex.figure), reference("d2"), rtol=1e-5, atol=1e-6)
    assert not np.allclose(lines(ex.figure), before)
    ex.node.value = "out"
    assert len(ex.figure.data) == 1
    np.testing.assert_allclose(lines(ex.figure), reference("out"), rtol=1e-5, atol=1e-6)


def test_node_change_highlights_it_in_the_drawing(ex):
    # "loop" is the delayed edge d3 -> cat: the edge is marked, no box.
    assert highlighted(ex.graph.value) == (set(), {"d3->cat"})
    ex.node.value = "d1"
    assert highlighted(ex.graph.value) == ({"d1"}, set())
    ex.node.value = "d2"
    assert highlighted(ex.graph.value) == ({"d2"}, set())


def test_layer_called_twice_highlights_the_layer():
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((2,), name="loop")
    shared = keras.layers.Dense(2, name="shared")
    h = shared(shared(keras.layers.Add(name="add")([x, loop])))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    ex = fbx.explore(net, np.ones((1, 3, 2), "float32"), nodes=["shared", "shared#1"])
    ex.node.value = "shared#1"  # fbx.trace's name for the second call
    assert highlighted(ex.graph.value) == ({"shared"}, set())


def test_sample_picker_changes_the_data(ex):
    ex.node.value = "d3"
    first = lines(ex.figure)
    ex.sample.value = 2
    assert {d.meta["sample"] for d in ex.figure.data} == {2}
    np.testing.assert_allclose(lines(ex.figure), reference("d3", sample=2), rtol=1e-5, atol=1e-6)
    assert not np.allclose(lines(ex.figure), first)
    ex.step.value = 4
    np.testing.assert_allclose(
        [v[0] for v in readout(ex).values()], reference("d3", sample=2)[4], rtol=1e-5, atol=1e-6
    )


def test_samples_and_initial_state_reach_the_trace():
    start = np.full((4,), 0.5, "float32")
    ex = fbx.explore(NET, X, nodes=["loop", "d1"], samples=[2, 0], initial_state={"loop": start})
    assert list(ex.node.options) == ["loop", "d1"]
    assert [v for _, v in ex.sample.options] == [0, 2]
    ex.sample.value = 2
    expected = reference("loop", sample=2, initial_state={"loop": start})
    np.testing.assert_allclose(lines(ex.figure), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lines(ex.figure)[0], start)


# --------------------------------------------------------------------- mode
def test_stateful_view_shows_compare_stateful(ex):
    assert not ex.mode.disabled and ex.chunks == 2
    ex.node.value = "d1"
    ex.sample.value = 1
    ex.step.value = 4
    ex.mode.value = "stateful"
    cmp = fbx.compare_stateful(NET, X, chunks=2, nodes=["d1"])
    for run in ("stateful", "stateless"):
        expected = fbx.wide(cmp, node="d1", values=run).loc[1].to_numpy()
        np.testing.assert_allclose(lines(ex.figure, run), expected, rtol=1e-5, atol=1e-6)
    # The view shows something the trace does not: chunk 2 restarted from zeros.
    assert not np.allclose(lines(ex.figure, "stateless")[3:], lines(ex.figure, "stateful")[3:])
    marker, boundary = ex.figure.layout.shapes
    assert (marker.x0, marker.x1) == (4, 4)
    assert boundary.x0 == boundary.x1 == 2.5  # between steps 2 and 3
    row = fbx.wide(cmp, node="d1", values="difference").loc[1].to_numpy()[4]
    np.testing.assert_allclose([v[2] for v in readout(ex).values()], row, rtol=1e-5, atol=1e-6)
    ex.mode.value = "stateless"
    assert len(ex.figure.layout.shapes) == 1
    np.testing.assert_allclose(lines(ex.figure), reference("d1", sample=1), rtol=1e-5, atol=1e-6)


def test_stateful_view_off_where_it_cannot_differ():
    x = keras.Input((2,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(2, name="d")(x), feedback={})
    ex = fbx.explore(plain, np.ones((1, 4, 2), "float32"))
    assert ex.mode.disabled and ex.comparison is None
    ex = fbx.explore(NET, X, chunks=1)
    assert ex.mode.disabled and ex.comparison is None
    ex = fbx.explore(NET, X, chunks=3)
    ex.mode.value = "stateful"
    assert [s.x0 for s in ex.figure.layout.shapes[1:]] == [1.5, 3.5]


# --------------------------------------------------------------------- errors
def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="fbx.explore expects a FeedbackModel.*Sequential"):
        fbx.explore(keras.Sequential([keras.layers.Dense(1)]), X)
    with pytest.raises(ValueError, match="no node 'nope'. Known nodes"):
        fbx.explore(NET, X, nodes=["d1", "nope"])
    with pytest.raises(ValueError, match="sample index 5 is out of range for a batch of 3"):
        fbx.explore(NET, X, samples=[0, 5])
    with pytest.raises(ValueError, match="samples=4 .* batch has 3"):
        fbx.explore(NET, X, samples=4)
    with pytest.raises(ValueError, match="chunks=9, but the sequence has 6 steps"):
        fbx.explore(NET, X, chunks=9)


def test_without_dot_the_drawing_renders_in_the_browser(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on PATH
    ex = fbx.explore(NET, X)
    assert "dot</code> program is not installed" in ex.graph.value
    view = ex.graph_view
    assert type(view).__name__ == "GraphvizAnyWidget" and any(w is view for w in walk(ex))
    assert re.search(r"^\td3 -> cat \[.*penwidth=3", view.dot_source, re.M)  # "loop"
    ex.node.value = "d2"
    marked = re.findall(r"^\t(\w+) \[.*penwidth=3", view.dot_source, re.M)
    assert marked == ["d2"]
