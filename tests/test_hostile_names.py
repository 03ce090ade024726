"""Hostile names: a name is text everywhere (DOT, SVG, the explorer's page, plotly).

A catalogue of names that break out of their context, or did (DOT attributes, HTML-like
labels, DOT escapes, the page's JSON, plotly's mini-HTML), is used as feedback, input,
layer and model names, whichever Keras takes: a name with "/" only as a feedback name; on
TensorFlow a layer or model name must also be a valid name scope to run, so those are drawn
here and explored on JAX (the `jax` run of `make test`). Each must draw (`pipe` does not
raise; the name is text in the SVG, no link, no attribute of its own making), explore (the
drawing still shows which element is which node), save as a page whose JSON holds no markup character, title
every plot escaped, and survive a `.keras` round trip under the default `safe_mode`.
tests/browser/test_hostile_names.py opens such pages in Chromium.
"""

import html
import html.parser
import json
import pathlib
import xml.etree.ElementTree as ET
import zipfile

import keras
import numpy as np
import pandas as pd
import pytest

import fbexplorer as fbx
from fbexplorer.escaping import MAX_SHOWN, dot_id
from fbexplorer.view import graph_targets, standalone_html, unrolled_targets

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
REPO = pathlib.Path(__file__).resolve().parents[1]

HOSTILE = {
    "dot-attributes": (
        '<a> URL="javascript:void(document.title=\'pwned\')" label="CLICK ME" fontsize=30 z=<b>'
    ),
    "html-comment": "<!--<script>",
    "html-label": "<b>loop</b>",
    "script": "</script><script>document.title='pwned'</script>",
    "img-onerror": "<img src=x onerror=alert(1)>",
    "link": '<a href="javascript:alert(1)">link</a>',
    "javascript": "javascript:alert(1)",
    "backslash-end": "loop\\",
    "dot-escapes": "x\\N\\G\\L\\n\\\\",
    "quotes": 'say "hi"',
    "quote": '"',
    "newline": "two\nlines",
    "entity": "&amp;",
    "unknown-entity": "&nbsp;&foo;",
    "line-separators": "a\u2028b\u2029c",
    "braces": "{}",
    "colons": "a:b:c",
    "keyword": "node",
    "comma": "a, b",
    "percent": "%3C",
    "at": "x@t0",
    "comment-end": "]]>-->",
    "unicode": "状态 ü",
    "control": "a\x01b\x1bc\x0cd\x7f",  # no XML may hold these: dot writes them as they are
    "nul": "a\x00b",
    "noncharacter": "a\ufffeb\uffff",
    "surrogate": "a\ud800b",  # a lone surrogate: a .keras file's JSON may hold "\\ud800"
    "long": "x" * 17_000,  # dot reads no string or id of more than 16,383 characters
}
CASES = [
    pytest.param(role, key, id=f"{role}-{key}")
    for role in ("feedback", "input", "layer", "model")
    for key, name in HOSTILE.items()
    if role == "feedback" or "/" not in name  # Keras forbids "/" in an operation's name
    if not (role == "layer" and key == "surrogate")  # nor can TensorFlow name an op so
]
X = np.random.default_rng(0).uniform(-1, 1, size=(2, 5, 1)).astype("float32")


def model(role: str, key: str):
    """x -> concatenate(x, loop) -> d1, fed back as `loop`; the hostile name replaces one."""
    name = HOSTILE[key]
    fb = name if role == "feedback" else "loop"
    x = keras.Input((1,), name=name if role == "input" else "x")
    loop = fbx.Feedback((2,), name=fb)
    cat = keras.layers.Concatenate(name="cat")([x, loop])
    h = keras.layers.Dense(2, activation="tanh", name=name if role == "layer" else "d1")(cat)
    return fbx.FeedbackModel(x, h, feedback={fb: h}, name=name if role == "model" else "m")


# ------------------------------------------------------------------ checks
def check_svg(svg: str) -> dict:
    """The SVG parses, holds nothing active, and nothing a name made; returns what it shows.

    Returns {"texts": [each group's text lines, joined by newlines], "tips": [tooltips],
    "titles": [titles], "box_tips": [the boxes' tooltips]}.
    """
    root = ET.fromstring(svg.encode())  # an undefined entity (&nbsp;) would raise here
    shown = {"texts": [], "tips": [], "titles": [], "box_tips": []}
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        assert tag not in ("script", "foreignObject", "image", "use"), tag
        for attr, value in el.attrib.items():
            local = attr.rsplit("}", 1)[-1]
            assert local != "href", (attr, value)  # no link at all: a name never makes one
            assert not local.lower().startswith("on"), (attr, value)
            assert not (local == "font-size" and float(value) > 14), (attr, value)
        if tag == "g" and el.get("class") in ("node", "edge", "cluster", "graph"):
            lines = [t.text or "" for t in el.iter(f"{SVG}text")]
            shown["texts"].append("\n".join(lines))
            shown["titles"].append(el.findtext(f"{SVG}title"))
        if tag == "g" and el.get("class") == "node":
            shown["box_tips"] += [a.get(f"{XLINK}title") for a in el.iter(f"{SVG}a")]
        if tag == "a" and el.get(f"{XLINK}title"):
            shown["tips"].append(el.get(f"{XLINK}title"))
    return shown


def displayed(name: str) -> str:
    """A name as a drawing shows it: a C0 control as its Control Picture (U+2400 + code),
    what no XML holds (a lone surrogate, U+FFFE, U+FFFF) as U+FFFD, cut at MAX_SHOWN."""
    out = "".join(
        chr(0x2400 + ord(c))
        if ord(c) < 0x20 and c not in "\t\n\r"
        else "\ufffd"
        if 0xD800 <= ord(c) <= 0xDFFF or c in "\ufffe\uffff"
        else c
        for c in name
    )
    return out if len(out) <= MAX_SHOWN else out[: MAX_SHOWN - 1] + "\u2026"


def shows(shown: dict, name: str) -> bool:
    """The name is one group's text (as lines of it) or a tooltip (as one of its names)."""
    name = displayed(name)
    texts = any(name in text for text in shown["texts"])
    return texts or any(name in tip for tip in shown["tips"])


class PageParser(html.parser.HTMLParser):
    """Every start tag, every comment, the title and each script's text, as a browser reads."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.comments, self.scripts, self.title = [], [], [], ""
        self._in = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in = tag
        if tag == "script":
            self.scripts.append([dict(attrs), ""])

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1][1] += data
        elif self._in == "title":
            self.title += data

    def handle_comment(self, data):
        self.comments.append(data)


def check_page(page: str, view, title: str):
    """A saved explorer page: three scripts, the state's JSON free of markup, the title text."""
    parsed = PageParser()
    parsed.feed(page)
    assert parsed.tags.count("script") == 3 and not parsed.comments, parsed.tags
    (state_attrs, state), (_, esm), _ = parsed.scripts
    assert state_attrs["id"] == "fbx-state"
    for ch in "<>&\u2028\u2029":
        assert ch not in state, ch
    decoded = json.loads(state)
    assert decoded["graph"] == view.graph and decoded["data"] == view.data
    assert decoded["unrolled_graph"] == view.unrolled_graph
    assert "</script" not in esm.lower() and "<!--" not in esm
    assert parsed.title == "".join("\ufffd" if 0xD800 <= ord(c) < 0xE000 else c for c in title)


PLOTLY_TEXT = ("name", "text", "hovertext")


def rendered_texts(fig) -> list[str]:
    """Every string plotly renders as mini-HTML: titles, legend names, texts, annotations."""
    out = []

    def walk(obj, key=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k not in ("meta", "hovertemplate", "customdata"):
                    walk(v, k)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, key)
        elif isinstance(obj, str) and key in PLOTLY_TEXT:
            out.append(obj)

    walk(fig.to_plotly_json())
    return out


def check_figure(fig, name: str):
    """The title shows the name escaped; no rendered text holds a raw '<' or a bare '&'."""
    title = fig.layout.title.text
    assert html.escape(name, quote=False) in title, (title, name)
    for text in rendered_texts(fig):
        assert "<" not in text and ">" not in text, text
        assert html.escape(html.unescape(text), quote=False) == text, text


# ------------------------------------------------------------------ drawing
def pipe(net, **kwargs) -> str:
    return fbx.draw(net, **kwargs).pipe(format="svg", encoding="utf-8")


@pytest.mark.parametrize(("role", "key"), CASES)
def test_draw_shows_the_name_as_text(role, key):
    name, net = HOSTILE[key], model(role, key)
    cyclic, unrolled = pipe(net), pipe(net, unroll=3)
    shown = [check_svg(svg) for svg in (cyclic, unrolled)]
    if role in ("feedback", "model"):  # a collapsed step shows only what crosses time
        shown.append(check_svg(pipe(net, unroll=3, collapse=True)))
    if role == "model":  # the model's name is the drawing's title, as an id of ours
        assert [s["titles"][0] for s in shown] == [dot_id(name)] * 3
        return
    assert all(shows(s, name) for s in shown)  # collapsed: on the arrows, the initial values
    # Hovering a box shows its name (a tooltip), not the box's DOT id (the SVG's <title>).
    assert displayed(name) in (shown[0] if role != "feedback" else shown[1])["box_tips"]
    # The explorer still finds the element that shows the name.
    target = graph_targets(cyclic, [name])[name]
    assert target["kind"] == ("edge" if role == "feedback" else "node")
    steps = {(k, kind) for n, k, kind, _ in unrolled_targets(unrolled, [name], 3)["targets"]}
    if role == "feedback":  # the initial value at step 0, the edge into steps 1 and 2
        assert steps == {(0, "initial"), (0, "edge"), (1, "edge"), (2, "edge")}
    else:
        assert steps == {(0, "node"), (1, "node"), (2, "node")}


def test_names_that_differ_get_boxes_that_differ():
    """Names `a:b` and `a_b` (once both `a_b`), `%41` and `A`: one box each, with its name."""
    x = keras.Input((2,), name="x")
    h = x
    for name in ("a:b", "a_b", "%41", "A"):
        h = keras.layers.Dense(2, name=name)(h)
    svg = pipe(fbx.FeedbackModel(x, h))
    check_svg(svg)
    boxes = [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "node"]
    labels = [g.findtext(f".//{SVG}text") for g in boxes]  # inside the tooltip's <a>
    assert sorted(labels) == sorted(["x", "a:b", "a_b", "%41", "A"])
    assert len({g.findtext(f"{SVG}title") for g in boxes}) == 5


def test_an_edge_that_carries_hundreds_of_names_draws():
    """200 names of 90 characters on one delayed edge: its id and tooltip fit in what dot
    reads (16,383 characters), and the explorer still finds each name's edge."""
    names = [f"{i:03d}" + "n" * 87 for i in range(200)]
    x = keras.Input((1,), name="x")
    loops = [fbx.Feedback((1,), name=n) for n in names]
    h = keras.layers.Dense(1, name="d1")(keras.layers.Concatenate(name="cat")([x, *loops]))
    svg = pipe(fbx.FeedbackModel(x, h, feedback={n: h for n in names}))
    assert shows(check_svg(svg), names[0])
    first, last = graph_targets(svg, [names[0]]), graph_targets(svg, [names[-1]])
    assert first[names[0]] == last[names[-1]] and first[names[0]]["kind"] == "edge"


# ------------------------------------------------------------------ explorer
FEEDBACK_NAMES = list(HOSTILE.values())
INPUT_NAMES = [n for n in HOSTILE.values() if "/" not in n]


def every_name(role: str, leave_out=()):
    """One small model with every hostile name as a feedback (all fed from d1), or an input."""
    names = FEEDBACK_NAMES if role == "feedback" else INPUT_NAMES
    names = [n for n in names if n not in leave_out]
    xs = [keras.Input((1,), name=n) for n in names] if role == "input" else [keras.Input((1,))]
    fed_back = names if role == "feedback" else ["loop"]
    loops = [fbx.Feedback((2,), name=n) for n in fed_back]
    h = keras.layers.Concatenate(name="cat")([*xs, *loops])
    h = keras.layers.Dense(2, activation="tanh", name="d1")(h)
    net = fbx.FeedbackModel(xs, h, feedback={n: h for n in fed_back}, name="m")
    return net, names, [X] * len(xs)


@pytest.fixture(autouse=True)
def _seed():  # the conftest's, without its clear_session: this module's models are shared
    keras.utils.set_random_seed(1234)


@pytest.fixture(scope="module", params=["feedback", "input"])
def explored(request):
    keras.utils.set_random_seed(0)
    net, names, inputs = every_name(request.param)
    ex = fbx.explore(net, inputs, window=2)
    ex.view.unrolled = True  # draws the unrolled window
    yield request.param, net, names, inputs, ex
    keras.backend.clear_session()


def test_explorer_drawings_show_every_name(explored):
    _, _, names, _, ex = explored
    cyclic, unrolled = check_svg(ex.view.graph["svg"]), check_svg(ex.view.unrolled_graph["svg"])
    for name in names:
        assert shows(cyclic, name) and shows(unrolled, name), repr(name)[:80]


@pytest.mark.parametrize("key", list(HOSTILE))
def test_save_html_keeps_the_name_as_text(explored, key, tmp_path):
    role, _, names, _, ex = explored
    name = HOSTILE[key]
    if name not in names:
        return  # a name with "/" is no input name
    ex.node.value = name
    assert ex.view.data["node"] == name and ex.view.data["title"].startswith(name)
    page = pathlib.Path(ex.save_html(tmp_path / "page.html")).read_text(encoding="utf-8")
    check_page(page, ex.view, f"m: {name}, sample 0")


def test_save_html_escapes_a_hostile_title(explored):
    title = HOSTILE["script"] + HOSTILE["html-comment"]
    check_page(standalone_html(explored[-1].view, title=title), explored[-1].view, title)


# ------------------------------------------------------------------ plots
@pytest.fixture(scope="module")
def traced():
    keras.utils.set_random_seed(0)
    net, _, inputs = every_name("feedback")
    frame = fbx.trace(net, inputs)
    comparison = fbx.compare_stateful(net, inputs, 2)
    yield frame, comparison, fbx.explore(net, inputs)
    keras.backend.clear_session()


@pytest.mark.parametrize("key", [k for k, n in HOSTILE.items() if set(n) & set("<>&")])
def test_every_plot_escapes_the_name(traced, key):
    frame, comparison, ex = traced
    name = HOSTILE[key]
    check_figure(fbx.plot_trace(frame, node=name), name)
    check_figure(fbx.plot_heatmap(frame, node=name), name)
    check_figure(fbx.plot_comparison(comparison, node=name), name)
    check_figure(fbx.portrait(frame, nodes=[name]), name)
    norms = pd.DataFrame({"node": [name] * 3, "t": [0, 1, 2], "norm": [1.0, 0.5, 0.25]})
    figure = fbx.plot_gradient_norms(norms)
    assert figure.data[0].name == html.escape(name, quote=False)
    check_figure(figure, "gradient norm per step")
    ex.node.value = name
    for panel in ("trajectories", "heatmap", "portrait"):  # the portrait: every state's name
        check_figure(ex.figure(panel), name)


def test_a_title_given_is_the_callers_markup(traced):
    fig = fbx.plot_trace(traced[0], node="a, b", title="<b>bold</b>")
    assert fig.layout.title.text == "<b>bold</b>"


# ------------------------------------------------------------------ .keras
@pytest.mark.parametrize("role", ["feedback", "input"])
def test_keras_round_trip_keeps_the_names_and_explores_safely(role, tmp_path):
    keras.utils.set_random_seed(0)
    # Keras's save cannot write a NUL or a lone surrogate (HDF5); a file can hold them (below).
    net, names, inputs = every_name(role, leave_out=[HOSTILE["nul"], HOSTILE["surrogate"]])
    path = tmp_path / "hostile.keras"
    net.save(path)
    back = keras.models.load_model(path)  # the default safe_mode
    assert (back.feedback_names if role == "feedback" else back.graph.input_names) == names
    assert fbx.draw(back).source == fbx.draw(net).source
    assert fbx.draw(back, unroll=2).source == fbx.draw(net, unroll=2).source
    shown = check_svg(pipe(back, unroll=2))
    assert all(shows(shown, name) for name in names)
    if role == "feedback":  # the case: a file's feedback name ran script in the page
        ex = fbx.explore(back, inputs, window=2)
        ex.node.value = names[0]
        page = pathlib.Path(ex.save_html(tmp_path / "page.html")).read_text(encoding="utf-8")
        check_page(page, ex.view, f"m: {names[0]}, sample 0")
    keras.backend.clear_session()


def test_names_only_an_edited_file_holds_draw_and_save(tmp_path):
    """A NUL, a lone surrogate (JSON's "\\ud800"), control characters: a saved config may
    hold them though Keras cannot save them; such a model draws, explores and saves a page."""
    keras.utils.set_random_seed(0)
    keys = ["nul", "surrogate", "control", "noncharacter"]
    x = keras.Input((1,), name="x")
    loops = [fbx.Feedback((2,), name=f"LOOP{i}") for i in range(len(keys))]
    h = keras.layers.Concatenate(name="cat")([x, *loops])
    h = keras.layers.Dense(2, activation="tanh", name="d1")(h)
    net = fbx.FeedbackModel(x, h, feedback={f"LOOP{i}": h for i in range(len(keys))}, name="m")
    net.save(tmp_path / "plain.keras")
    with zipfile.ZipFile(tmp_path / "plain.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = files["config.json"].decode()
    for i, key in enumerate(keys):
        config = config.replace(f'"LOOP{i}"', json.dumps(HOSTILE[key]))
    files["config.json"] = config.encode()
    with zipfile.ZipFile(tmp_path / "edited.keras", "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    back = keras.models.load_model(tmp_path / "edited.keras")
    names = [HOSTILE[k] for k in keys]
    assert back.feedback_names == names
    shown = check_svg(pipe(back, unroll=2))
    assert all(shows(shown, name) for name in names)
    ex = fbx.explore(back, X, window=2)
    ex.node.value = names[1]
    page = pathlib.Path(ex.save_html(tmp_path / "page.html")).read_text(encoding="utf-8")
    check_page(page, ex.view, f"m: {names[1]}, sample 0")
    keras.backend.clear_session()


# ------------------------------------------------------------------ JAX: layer names run
@pytest.mark.jax
def test_layer_and_model_names_explore_on_jax(tmp_path):
    """On JAX a layer or model name need not be a name scope: such a model runs and explores."""
    assert keras.backend.backend() == "jax"
    keys = ["dot-attributes", "html-comment", "img-onerror", "backslash-end", "entity", "colons"]
    X = np.ones((1, 4, 1), "float32")
    names = [HOSTILE[k] for k in keys]
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((2,), name="loop")
    h = keras.layers.Concatenate(name="cat")([x, loop])
    for name in names:  # one layer per hostile name, in a chain
        h = keras.layers.Dense(2, activation="tanh", name=name)(h)
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, name=HOSTILE["dot-attributes"])
    ex = fbx.explore(net, X, window=2)
    for name in names:
        assert ex.view.graph["targets"][name]["kind"] == "node", name
        assert shows(check_svg(ex.view.graph["svg"]), name), name
    ex.view.unrolled = True
    assert set(names) <= {t[0] for t in ex.view.unrolled_graph["targets"]}
    ex.node.value = names[0]
    page = pathlib.Path(ex.save_html(tmp_path / "p.html")).read_text(encoding="utf-8")
    check_page(page, ex.view, f"{net.name}: {names[0]}, sample 0")
