"""`Explorer.save_html` keeps every node and sample: the pages in the file against
`fbx.trace`, its size for the README's example, and what it keeps (and says)
above its budget."""

import json
import pathlib
import re
import xml.etree.ElementTree as ET

import keras
import numpy as np
import pytest
from helpers import readme_network

import fbexplorer as fbx
from fbexplorer.view import decode

SVG = "{http://www.w3.org/2000/svg}"
HIGHLIGHT = "#c2185b"  # drawing.py's colour for what `highlight` marks
keras.utils.set_random_seed(0)
NET = readme_network()  # the README's example: 8 units, T=20
X = np.random.default_rng(0).uniform(-1, 1, size=(8, 20, 1)).astype("float32")


@pytest.fixture(scope="module")
def ex():
    return fbx.explore(NET, X[:4])


def state_of(path) -> dict:
    page = pathlib.Path(path).read_text()
    found = re.search(r'<script id="fbx-state" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def highlighted(svg: str) -> set:
    """The titles of the node boxes drawn in the highlight colour."""
    root = ET.fromstring(re.sub(r"^.*?(<svg)", r"\1", svg, flags=re.S))
    return {
        g.find(f"{SVG}title").text
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "node" and HIGHLIGHT in {el.get("stroke") for el in g.iter()}
    }


def page_of(pages, node, sample) -> dict:
    """A page as the saved file's pickers compose it."""
    return {
        **pages["common"],
        **pages["by_sample"][str(sample)],
        **pages["by_node"][node][str(sample)],
    }


def test_saved_page_holds_every_node_and_sample_under_a_megabyte(ex, tmp_path):
    ex.node.value, ex.sample.value = "d2", 1
    path = ex.save_html(tmp_path / "readme.html")
    size = pathlib.Path(path).stat().st_size
    assert size < 1_000_000, size
    pages = state_of(path)["pages"]
    assert pages["nodes"][0] == "d2" and sorted(pages["nodes"]) == sorted(ex.data.nodes)
    assert pages["samples"] == [1, 0, 2, 3]  # the one shown first
    assert page_of(pages, "d2", 1) == ex.view.data  # the page shown, rebuilt from its parts
    frame = fbx.trace(NET, X[:4])
    for node in ["loop", "d3", "x"]:
        for sample in range(4):
            page = page_of(pages, node, sample)
            expected = fbx.wide(frame, node=node).loc[sample].to_numpy()
            got = decode(page["runs"][0]["values"], (1, 20, page["units"]))[0]
            np.testing.assert_allclose(got, expected, rtol=1e-6)
            fill = decode(page["colour"]["values"], (1, len(ex.data.nodes), 20))[0]
            row = page["colour"]["names"].index(node)
            np.testing.assert_allclose(fill[row], expected.mean(axis=1), rtol=1e-5, atol=1e-6)
    # Each node's drawing highlights it (drawing.py's colour for `highlight`), and only it.
    for node in ["d1", "d3"]:
        assert highlighted(pages["graphs"][node]["svg"]) == {node}


def test_above_the_budget_the_page_keeps_what_fits_and_says_what_to_pass(ex, tmp_path):
    ex.node.value, ex.sample.value = "loop", 0
    full = state_of(ex.save_html(tmp_path / "all.html"))["pages"]
    one_sample = sum(len(json.dumps(p["0"])) for p in full["by_node"].values())
    budget = len(json.dumps(full)) - 2 * one_sample  # room for two samples fewer
    with pytest.warns(UserWarning) as record:
        path = ex.save_html(tmp_path / "part.html", max_bytes=budget)
    (message,) = [str(w.message) for w in record]
    pages = state_of(path)["pages"]
    assert len(json.dumps(pages)) <= budget
    assert pages["nodes"] == full["nodes"] and pages["samples"] == [0, 1]
    assert message.startswith("Explorer.save_html kept 7 of 7 nodes and 2 of 4 samples")
    assert "the samples [2, 3]. Pass nodes= and samples=" in message
    assert pages["note"] == message.split(";")[0]
    # Asked for less, it keeps it all, with no warning.
    path = ex.save_html(tmp_path / "less.html", nodes=["d1", "d3"], samples=2, max_bytes=budget)
    pages = state_of(path)["pages"]
    assert pages["nodes"] == ["loop", "d1", "d3"] and pages["samples"] == [0, 1]
    with pytest.raises(ValueError, match=r"no node 'd9'. Expected nodes among \['x', "):
        ex.save_html(tmp_path / "bad.html", nodes=["d9"])
    with pytest.raises(ValueError, match=r"the samples \[0, 1, 2, 3\]; .*Received: samples=\[7\]"):
        ex.save_html(tmp_path / "bad.html", samples=[7])


def test_the_widget_state_keeps_the_pages_explored(tmp_path):
    """What a notebook exported with its widget state can switch to with no kernel:
    each node and sample shown, as the view showed it, and the pickers linked in the
    browser to the view's choice."""
    ex = fbx.explore(NET, X[:4])
    assert (ex.view.node_index, ex.view.sample_index) == (ex.node.index, ex.sample.index)
    shown = {("loop", 0): ex.view.data}
    for node, sample in [("d2", 0), ("d2", 2), ("out", 2)]:
        ex.node.value, ex.sample.value = node, sample
        shown[(node, sample)] = ex.view.data
    pages = ex.view.pages
    assert pages["options"] == {"nodes": ex.data.nodes, "samples": [0, 1, 2, 3]}
    assert {(n, int(s)) for n, by in pages["by_node"].items() for s in by} == set(shown)
    for (node, sample), data in shown.items():
        assert page_of(pages, node, sample) == data
    assert highlighted(pages["graphs"]["d2"]["svg"]) == {"d2"}
    sources = [(link.source, link.target) for link in ex.picker_links]
    assert sources == [((ex.node, "index"), (ex.view, "node_index")),
                       ((ex.sample, "index"), (ex.view, "sample_index"))]  # fmt: skip
    ex.colour.value = "norm"  # other fills: the pages start afresh
    assert {n: sorted(by) for n, by in ex.view.pages["by_node"].items()} == {"out": ["2"]}
