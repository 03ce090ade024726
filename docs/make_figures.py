"""Regenerate the README's drawings of the d1 -> d2 -> d3 -> d1 network.

Run from the repository root: `python docs/make_figures.py` (needs Graphviz's
`dot`). Writes docs/cyclic.svg and docs/unrolled.svg. With `--explorer` it
also trains the README's network as the README does, saves its explorer
(`Explorer.save_html`, with its fixed points and targets) and photographs the
page offline in headless Chromium (playwright, `FBX_CHROMIUM` or `chromium`
on PATH): docs/explorer.png (the trajectories tab, hovered) and
docs/explorer-portrait.png (the portrait tab, a fixed point hovered).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import fbexplorer as fbx  # noqa: E402

DOCS = Path(__file__).resolve().parent


def seed_network():
    """The README's example: x -> d1 -> d2 -> d3 -> out, d3 fed back into d1."""
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((8,), name="loop")
    h1 = keras.layers.Dense(8, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
    h2 = keras.layers.Dense(8, activation="tanh", name="d2")(h1)
    h3 = keras.layers.Dense(8, activation="tanh", name="d3")(h2)
    y = keras.layers.Dense(1, name="out")(h3)
    return fbx.FeedbackModel(inputs=x, outputs=y, feedback={"loop": h3})


def explorer_page(folder: Path) -> Path:
    """The README's network trained as the README trains it, explored on 4 samples."""
    import numpy as np

    keras.backend.clear_session()  # layer names as in the README (no `concatenate_1`)
    keras.utils.set_random_seed(0)
    net = seed_network()
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(1024, 20, 1)).astype("float32")
    Y = np.cumsum(X, axis=1) / np.arange(1, 21)[None, :, None]
    net.compile(keras.optimizers.Adam(0.01), "mse")
    net.fit(X, Y, batch_size=64, epochs=20, verbose=0)
    fp = fbx.fixed_points(net, {"x": np.zeros(1, "float32")}, initial=X[:4])
    ex = fbx.explore(net, X[:4], fixed_points=fp, targets=Y[:4])
    ex.node.value = "d3"
    ex.step.value = 12
    return Path(ex.save_html(folder / "explorer.html"))


def explorer_screenshots():
    """docs/explorer.png and docs/explorer-portrait.png, from the saved page, offline."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("FBX_CHROMIUM") or shutil.which("chromium")
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        page_path = explorer_page(Path(folder))
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        page.route(
            "**/*",
            lambda r: r.continue_() if r.request.url[:5] in ("file:", "blob:") else r.abort(),
        )
        page.goto(page_path.as_uri())
        page.locator(".fbx-graph svg g.node").first.wait_for(timeout=20_000)
        lines = page.locator(".fbx-lines").bounding_box()
        page.mouse.move(lines["x"] + lines["width"] * 0.35, lines["y"] + lines["height"] * 0.4)
        page.locator(".fbx").screenshot(path=str(DOCS / "explorer.png"))
        page.click(".fbx-tab[data-panel=portrait]")
        page.locator(".fbx-portrait .fbx-fixed [data-kind]").first.hover()
        page.locator(".fbx-panel").screenshot(path=str(DOCS / "explorer-portrait.png"))
        browser.close()


def main():
    net = seed_network()
    (DOCS / "cyclic.svg").write_bytes(fbx.draw(net).pipe(format="svg"))
    (DOCS / "unrolled.svg").write_bytes(fbx.draw(net, unroll=3).pipe(format="svg"))
    if "--explorer" in sys.argv:
        explorer_screenshots()


if __name__ == "__main__":
    main()
