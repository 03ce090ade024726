"""Hostile names in Chromium: a saved explorer page shows every name as text and runs none.

Two pages, each opened from disk in headless Chromium with every network request refused:

1. `Explorer.save_html` of a model whose feedback and input names carry script (a DOT
   attribute list with a `javascript:` URL, `</script><script>`, `<!--<script>`, an
   `<img onerror>`, an `<a href="javascript:...">`, U+2028, a trailing backslash, `&amp;`,
   a NUL, a control character and a lone surrogate), opened on the first of them.
2. The same view with its drawings tampered with after `fbx.draw` (a `<script>`, a
   `javascript:` link, `<foreignObject>` with an `<img onerror>`, `onload` and `onclick`
   attributes, an `<animate>` that would set an `href`, CSS that would fetch a URL: an
   escaped `url()`, an `image-set()`): the page must not trust its SVG.

On each: no dialog opens, `document.title` is the page's own, the sentinel global the
payloads set stays unset, and no request leaves the page, after every link, edge label and
node in both drawings (cyclic and unrolled) is clicked and hovered; the page is not blank
(the graph, the tabs, the trajectories and the readout render); the names show as text (the
panel's title, the readout, the drawing's labels).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SENTINEL = "__fbx_pwned"
ATTRIBUTES = (
    '<a> URL="javascript:void(document.title=\'pwned\')" label="CLICK ME" fontsize=30 z=<b>'
)
FEEDBACK_NAMES = [
    ATTRIBUTES,
    "<!--<script>",
    "</script><script>document.title='pwned';window.__fbx_pwned=1</script>",
    '<img src=x onerror="window.__fbx_pwned=2;alert(1)">',
    '<a href="javascript:window.__fbx_pwned=3">link</a>',
    "javascript:alert(1)",
    "a\u2028b\u2029c",
    "loop\\",
    "&amp;",
    "a\x00\x01b\ud800",  # no SVG holds these: they once left the drawing blank
]
SHOWN_AS = {"a\x00\x01b\ud800": "a\u2400\u2401b\ufffd"}  # Control Pictures, U+FFFD
INPUT_NAMES = ['<svg onload="window.__fbx_pwned=4">', "x\\"]
TAMPERED = (
    "<script>window.__fbx_pwned=5</script>"
    '<a xlink:href="javascript:window.__fbx_pwned=6" href="javascript:window.__fbx_pwned=7">'
    '<text x="20" y="20" class="fbx-evil">CLICK</text></a>'
    '<a href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">'
    '<text x="20" y="40" class="fbx-evil">DATA</text></a>'
    '<foreignObject width="50" height="50"><body xmlns="http://www.w3.org/1999/xhtml">'
    '<img src="x" onerror="window.__fbx_pwned=8"/></body></foreignObject>'
    '<svg onload="window.__fbx_pwned=9"/>'
    '<g onclick="window.__fbx_pwned=10" class="fbx-evil"><rect width="30" height="30"/></g>'
    '<a><animate attributeName="href" values="javascript:window.__fbx_pwned=11"/>'
    '<text x="20" y="60" class="fbx-evil">ANIM</text></a>'
    '<image href="x" onerror="window.__fbx_pwned=12" width="5" height="5"/>'
    # No request out of the page, through CSS either: an escaped url(), image-set().
    '<rect width="9" height="9" style="fill:\\75 rl(http://evil.invalid/a)"/>'
    '<rect width="9" height="9" fill="\\75 rl(http://evil.invalid/b)"/>'
    '<rect width="9" height="9" style="mask-image:image-set(\'http://evil.invalid/c\' 1x)"/>'
    '<rect width="9" height="9" style="cursor:\\75 rl(http://evil.invalid/d),auto"/>'
)
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("FBX_CHROMIUM") or shutil.which("chromium")
    if not exe:
        pytest.fail("No Chromium found: `make test-browser` installs Debian's `chromium`.")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1100})
        finally:
            browser.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """(saved page, tampered page, the explorer's page title) of the hostile model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    sys.path.insert(0, str(REPO))
    import fbexplorer as fbx
    from fbexplorer.view import standalone_html

    keras.utils.set_random_seed(0)
    xs = [keras.Input((1,), name=n) for n in INPUT_NAMES]
    loops = [fbx.Feedback((2,), name=n) for n in FEEDBACK_NAMES]
    h = keras.layers.Concatenate(name="cat")([*xs, *loops])
    h = keras.layers.Dense(2, activation="tanh", name="d1")(h)
    net = fbx.FeedbackModel(xs, h, feedback={n: h for n in FEEDBACK_NAMES}, name="m")
    X = np.random.default_rng(0).uniform(-1, 1, size=(2, 6, 1)).astype("float32")
    ex = fbx.explore(net, [X] * len(xs), window=2)
    ex.node.value = ATTRIBUTES
    folder = tmp_path_factory.mktemp("hostile")
    saved = pathlib.Path(ex.save_html(folder / "saved.html"))
    for trait in ("graph", "unrolled_graph"):
        drawing = getattr(ex.view, trait)
        svg = drawing["svg"].replace("</svg>", TAMPERED + "</svg>")
        setattr(ex.view, trait, {**drawing, "svg": svg})
    tampered = folder / "tampered.html"
    tampered.write_text(standalone_html(ex.view, title="tampered"), encoding="utf-8")
    return saved, tampered, f"m: {ATTRIBUTES}, sample 0"


# Click and hover every link, text and group of the drawing, the way a user would poke it.
POKE = """() => {
  const box = document.querySelector('.fbx-graph');
  const all = Array.from(box.querySelectorAll('a, text, g, rect, path, polygon, ellipse'));
  for (const el of all) {
    for (const type of ['mouseover', 'mousedown', 'mouseup', 'click']) {
      el.dispatchEvent(new MouseEvent(type, { bubbles: true, cancelable: true, view: window }));
    }
  }
  return all.length;
}"""

LOOK = """() => ({
  title: document.title,
  pwned: window.__fbx_pwned === undefined ? null : window.__fbx_pwned,
  nodes: document.querySelectorAll('.fbx-graph svg g.node').length,
  tabs: document.querySelectorAll('.fbx-tab').length,
  lines: document.querySelectorAll('.fbx-lines polyline').length,
  rows: document.querySelectorAll('.fbx-readout tr').length,
  panelTitle: (document.querySelector('.fbx-title') || {}).textContent,
  readoutNode: (document.querySelector('.fbx-readout b') || {}).textContent,
  drawn: Array.from(document.querySelectorAll('.fbx-graph svg text')).map((t) => t.textContent),
  links: Array.from(document.querySelectorAll('.fbx-graph a')).filter(
    (a) => a.hasAttribute('href') || a.hasAttributeNS('http://www.w3.org/1999/xlink', 'href')).length,
  active: document.querySelectorAll(
    '.fbx-graph script, .fbx-graph foreignObject, .fbx-graph animate, .fbx-graph set').length,
  handlers: Array.from(document.querySelectorAll('.fbx-graph *')).filter(
    (el) => Array.from(el.attributes).some((a) => a.name.toLowerCase().startsWith('on'))).length,
})"""


def _open(page, path: pathlib.Path):
    """Open a page from disk, every other request refused; returns (dialogs, asked, errors)."""
    dialogs, asked, errors = [], [], []

    def refuse(route):
        url = route.request.url
        if url.startswith("file:") or url.startswith("blob:"):
            route.continue_()
        else:
            asked.append(url)
            route.abort()

    def dialog(d):
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", refuse)
    page.goto(path.as_uri())
    page.locator(".fbx-graph svg g.node").first.wait_for(timeout=20_000)
    return dialogs, asked, errors


def _poke_both_drawings(page, url: str) -> list:
    """Click every link and edge label (real clicks) and poke every element, both drawings."""
    looks = []
    for unrolled in (False, True):
        if unrolled:
            page.click(".fbx-toggle input")
            page.wait_for_selector(".fbx-graph[data-view=unrolled] svg g.node", timeout=10_000)
        for el in page.locator(".fbx-graph a, .fbx-graph g.edge text, .fbx-evil").all():
            if el.is_visible():
                el.click(force=True, timeout=2_000, no_wait_after=True)
        page.evaluate(POKE)
        page.wait_for_timeout(300)  # a javascript: URL runs after the click returns
        assert page.url == url, page.url  # no navigation, to a javascript: or data: URL either
        looks.append(page.evaluate(LOOK))
    return looks


def _check(look: dict, title: str):
    assert look["title"] == title and look["pwned"] is None, look
    assert look["links"] == 0 and look["active"] == 0 and look["handlers"] == 0, look
    assert look["nodes"] > 0 and look["tabs"] >= 2 and look["lines"] > 0, look  # not blank
    assert look["rows"] > 1, look


def test_saved_page_shows_names_as_text_and_runs_none(page, pages):
    saved, _, title = pages
    dialogs, asked, errors = _open(page, saved)
    first = page.evaluate(LOOK)
    _check(first, title)
    assert first["panelTitle"].startswith(ATTRIBUTES) and first["readoutNode"] == ATTRIBUTES
    drawn = "\n".join(first["drawn"])  # the cyclic drawing: boxes of the inputs
    assert all(name in drawn for name in INPUT_NAMES), first["drawn"]
    cyclic, unrolled = _poke_both_drawings(page, saved.as_uri())
    _check(cyclic, title)
    _check(unrolled, title)
    drawn = "\n".join(unrolled["drawn"])  # the unrolled drawing: the initial values too
    names = [SHOWN_AS.get(n, n) for n in FEEDBACK_NAMES + INPUT_NAMES]
    assert all(name in drawn for name in names), unrolled["drawn"]
    assert not dialogs and not asked and not errors, (dialogs, asked, errors)


def test_tampered_drawing_is_shown_without_its_script(page, pages):
    _, tampered, _ = pages
    dialogs, asked, errors = _open(page, tampered)
    page.wait_for_timeout(300)  # an onload or onerror would have run by now
    _check(page.evaluate(LOOK), "tampered")
    cyclic, unrolled = _poke_both_drawings(page, tampered.as_uri())
    _check(cyclic, "tampered")
    _check(unrolled, "tampered")
    assert "CLICK" in cyclic["drawn"]  # what is left of a link is its text
    assert not dialogs and not asked and not errors, (dialogs, asked, errors)
