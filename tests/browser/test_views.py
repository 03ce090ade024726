"""The explorer's views in a real browser: hover values, a click that selects, zoom, widths.

An `Explorer.save_html` page of a small feedback net (with its fixed points and
targets) is opened from disk in headless Chromium, every network request
refused, as tests/browser/test_explorer.py does. The pointer is moved onto
known points, found from what the page drew (a polyline's vertex, a heatmap
cell, a fixed point's circle), and the hover box must show the value there,
checked against the trace in Python (to the 4 significant digits shown). A
click on a node of the graph must select it (the view's `selected` trait,
which the notebook's node picker follows: tests/test_widgets.py). The
portrait zooms with the wheel and resets with a double click, and the
unrolled window keeps a fixed width per step, scrolling rather than squeezing.
Run with `make test-browser`, or:
`PYTHONPATH=$PWD python -m pytest -q tests/browser/test_views.py`.
Screenshots go to build/views-*.png.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

from tests.browser.test_explorer import CHROMIUM_ARGS, REPO, _chromium

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The input's name is markup: the track, the hover and the graph must show it as text.
IN = 'x<img src=x onerror="window.hit=1">'


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(explorer, path of its saved page): d1 chosen, at t=3, with fixed points and targets."""
    import keras
    import numpy as np

    sys.path.insert(0, str(REPO))
    import fbexplorer as fbx

    keras.utils.set_random_seed(1)
    x = keras.Input((1,), name=IN)
    loop = fbx.Feedback((4,), name="loop")
    h = keras.layers.Dense(4, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h), feedback={"loop": h})
    X = np.random.default_rng(0).uniform(-1, 1, size=(2, 12, 1)).astype("float32")
    fp = fbx.fixed_points(net, {IN: np.zeros(1, "float32")}, initial=X, n_starts=8)
    ex = fbx.explore(net, X, fixed_points=fp, targets=np.cumsum(X, axis=1))
    ex.node.value = "d1"
    ex.step.value = 3
    path = tmp_path_factory.mktemp("views") / "views.html"
    return ex, fp, pathlib.Path(ex.save_html(path))


@pytest.fixture
def page(saved):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors, asked = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))

        def refuse(route):
            url = route.request.url
            if url.startswith(("file:", "blob:")):
                route.continue_()
            else:
                asked.append(url)
                route.abort()

        page.route("**/*", refuse)
        page.goto(saved[2].as_uri())
        page.locator(".fbx-graph svg g.node").first.wait_for(timeout=20_000)
        yield page
        assert not errors and not asked, (errors, asked)
        browser.close()


# The page coordinates of a point (x, y) of an element's own SVG (its viewBox).
_TO_PAGE = """([el, x, y]) => {
  const svg = el.ownerSVGElement || el;
  const p = svg.createSVGPoint(); p.x = x; p.y = y;
  const q = p.matrixTransform(svg.getScreenCTM());
  return [q.x, q.y];
}"""


def _tip(page) -> dict:
    return page.evaluate(
        "() => { const t = document.querySelector('.fbx-tip');"
        " return {shown: t.style.display !== 'none', text: t.innerText, ...t.dataset}; }"
    )


def _close(text: str, value: float):
    assert abs(float(text) - value) <= 1e-3 * max(abs(value), 1e-3), (text, value)


def test_hover_shows_the_value_under_the_pointer(saved, page):
    ex, fp, _ = saved
    values = ex.values("d1")[0]  # sample 0, (t, unit)
    t = 6
    unit = int(abs(values[t][:, None] - values[t][None]).sum(1).argmax())  # the loneliest line
    line = page.locator(f".fbx-lines polyline[data-unit='{unit}']").first
    vertex = line.evaluate("(l, t) => l.getAttribute('points').split(' ')[t].split(',')", t)
    x, y = page.evaluate(_TO_PAGE, [line.element_handle(), float(vertex[0]), float(vertex[1])])
    page.mouse.move(x, y)
    tip = _tip(page)
    assert tip["shown"] and tip["t"] == str(t) and tip["unit"] == str(unit), tip
    _close(tip["value"], float(values[t, unit]))
    page.screenshot(path=str(_shot("views-hover.png")))

    # The input / target / output track reads every value at the step under the pointer.
    track = page.locator(".fbx-track")
    box = track.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.4)
    tip = _tip(page)
    assert tip["shown"] and f"input {IN}" in tip["text"] and "target out" in tip["text"], tip
    assert "output out" in tip["text"], tip
    key = page.locator(".fbx-track-key").inner_text()
    assert f"input {IN}" in key and "output out" in key, key

    page.click(".fbx-tab[data-panel=heatmap]")  # a heatmap cell
    canvas = page.locator(".fbx-heat canvas")
    box = canvas.bounding_box()
    units, steps = values.shape[1], values.shape[0]
    u, t = 2, 9
    page.mouse.move(
        box["x"] + (t + 0.5) * box["width"] / steps, box["y"] + (u + 0.5) * box["height"] / units
    )
    tip = _tip(page)
    assert tip["shown"] and (tip["t"], tip["unit"]) == (str(t), str(u)), tip
    _close(tip["value"], float(values[t, u]))

    page.click(".fbx-tab[data-panel=portrait]")  # a fixed point: its stability and tau
    point = page.locator(".fbx-portrait .fbx-fixed [data-kind]").first
    point.hover()
    tip = _tip(page)
    row = fp.frame.iloc[0]
    assert tip["shown"] and tip["text"].startswith("fixed point 0"), tip
    assert str(row["stability"]) in tip["text"] and "spectral radius" in tip["text"], tip
    shown = tip["text"].split("spectral radius ")[1].split(",")[0]
    _close(shown, float(row["spectral_radius"]))
    assert "tau" in tip["text"], tip
    page.screenshot(path=str(_shot("views-portrait.png")))


def test_a_click_on_a_graph_node_selects_it(page):
    boxes = page.locator(".fbx-graph g.fbx-pick")
    names = [boxes.nth(i).get_attribute("data-node") for i in range(boxes.count())]
    box = boxes.nth(names.index(IN))  # the input's box, named as markup
    box.click()
    found = page.evaluate(
        "() => ({selected: document.querySelector('.fbx-graph').dataset.selected,"
        " marked: Array.from(document.querySelectorAll('.fbx-graph .fbx-selected'),"
        " (g) => g.dataset.node)})"
    )
    assert found == {"selected": IN, "marked": [IN]}, found
    box.hover()
    tip = _tip(page)
    assert tip["shown"] and tip["node"] == IN and tip["t"] == "3", tip
    assert tip["text"].startswith(IN), tip
    assert page.evaluate("() => [document.querySelectorAll('img').length, window.hit]") == [0, None]


def test_portrait_zooms_and_the_unrolled_window_scrolls(page):
    page.click(".fbx-tab[data-panel=portrait]")
    portrait = page.locator(".fbx-portrait")
    box = portrait.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    zoom = float(portrait.get_attribute("data-zoom"))
    assert zoom > 1.2, zoom
    portrait.dblclick()
    assert portrait.get_attribute("data-zoom") == "1.000"
    page.click(".fbx-toggle input")
    page.wait_for_selector(".fbx-graph[data-view=unrolled] .fbx-now", timeout=5_000)
    width, natural, step_px, scroll, client = page.evaluate(
        "() => { const g = document.querySelector('.fbx-graph'), s = g.querySelector('svg');"
        " return [s.getBoundingClientRect().width, s.viewBox.baseVal.width * 4 / 3,"
        " +g.dataset.stepPx, g.scrollWidth, g.clientWidth]; }"
    )
    # 5 steps at 0.8 of the drawing's own size (text about 15 px), wider than the box: it scrolls
    assert abs(width - 0.8 * natural) < 2 and abs(width - 5 * step_px) < 3, (width, natural)
    assert scroll > client, (scroll, client)


def _shot(name: str) -> pathlib.Path:
    out = REPO / "build" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def test_a_census_per_epoch_is_drawn_as_marks(saved, tmp_path):
    """A TraceCallback's census (portrait.census, one entry per epoch) is drawn as the
    fixed points given to explore are: by kind, with hover; attractors as crosses."""
    import copy

    import numpy as np
    from playwright.sync_api import sync_playwright

    from fbexplorer.view import encode, standalone_html

    ex = saved[0]
    data = copy.deepcopy(ex.view.data)
    census = {
        "fixed_points": {
            "points": encode(np.array([[0.1, 0.2], [0.3, -0.1]])),
            "stability": ["unstable", "stable"],
            "slow": [True, False],
            "spectral_radius": [1.2, 0.5],
            "tau": [None, 1.4427],
        },
        "attractors": {
            "points": encode(np.array([[0.0, 0.0]])),
            "kind": ["cycle"],
            "period": [2.0],
            "share": [0.75],
        },
    }
    data["panels"]["portrait"]["census"] = [census]
    ex.view.data = data
    path = tmp_path / "census.html"
    path.write_text(standalone_html(ex.view), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(path.as_uri())
        page.click(".fbx-tab[data-panel=portrait]")
        kinds = page.evaluate(
            "() => Array.from(document.querySelectorAll('.fbx-fixed [data-kind]'),"
            " (e) => e.dataset.kind)"
        )
        assert kinds.count("slow") == 1 and "stable" in kinds, kinds
        page.locator(".fbx-attractor").first.hover()
        tip = _tip(page)
        assert tip["text"].startswith("attractor 0") and "share 0.75" in tip["text"], tip
        assert "period 2" in tip["text"], tip
        browser.close()
