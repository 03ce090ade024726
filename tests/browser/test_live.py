"""The explorer live in JupyterLab while `fit` runs, and a saved page's pickers offline.

1. A notebook shows `fbx.explore(watch)` (a `TraceCallback`) in one cell and fits
   with the callback in the next (a callback sleeps after each epoch, so that
   the page can be watched). While the fit cell still runs (its prompt `[*]`),
   the view must show new epochs, its epoch slider following the newest; moved
   back by the user (Home on the slider), it must stay there while the epochs
   go on arriving; after the fit, the slider's arrow key must reach the last
   epoch (it grew) and the training tab must draw the loss.
2. `Explorer.save_html` of the README's network, opened from disk with every
   network request refused: the node and sample pickers switch the view (its
   title, the readout, the lines, the highlighted box) with no kernel.

Harness (server, Chromium, failure reports) as tests/browser/test_explorer.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
import test_explorer as harness
from test_explorer import page  # noqa: F401  (the Chromium page fixture)

REPO = pathlib.Path(__file__).resolve().parents[2]

SETUP = """\
import time
import keras
import numpy as np
import fbexplorer as fbx

keras.utils.set_random_seed(0)
x = keras.Input((1,), name="x")
loop = fbx.Feedback((4,), name="loop")
h = keras.layers.Dense(4, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h), feedback={"loop": h})
net.compile("adam", "mse")
X = np.random.default_rng(0).uniform(-1, 1, size=(8, 12, 1)).astype("float32")
watch = fbx.TraceCallback(X[:2])
fbx.explore(watch)"""

FIT = """\
class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(1.5)

net.fit(X, np.cumsum(X, axis=1), epochs=6, verbose=0, callbacks=[watch, Slow()])"""
EPOCHS = 6

# The fit cell's state and the explorer's, in one look.
_LOOK_JS = """() => {
  const cells = document.querySelectorAll('.jp-Notebook .jp-CodeCell');
  const prompt = (cells[1] && cells[1].querySelector('.jp-InputPrompt') || {}).innerText || '';
  const view = document.querySelector('.jp-OutputArea-output .fbx');
  const slider = Array.from(document.querySelectorAll('.widget-slider'))
    .find((s) => /epoch/.test(s.innerText));
  const readout = slider && slider.querySelector('.widget-readout');
  return {
    running: prompt.includes('*'),
    done: /\\[\\d+\\]/.test(prompt),
    epoch: view ? view.dataset.epoch : null,
    readout: readout ? readout.innerText.trim() : null,
  };
}"""


@pytest.fixture
def lab(tmp_path):
    """JupyterLab over a folder holding the live notebook; yields a harness.Server."""
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(FIT)]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "live.ipynb")
    settings = tmp_path / "settings"
    for plugin, values in harness.LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        TF_CPP_MIN_LOG_LEVEL="3",
        KERAS_BACKEND="tensorflow",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    port = harness._free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1"]
    cmd += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    cmd += [f"--IdentityProvider.token={harness.TOKEN}", f"--ServerApp.root_dir={root}"]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        end = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{harness._tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={harness.TOKEN}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > end:
                    pytest.fail(f"JupyterLab did not answer in 90 s:\n{harness._tail(log)}")
                time.sleep(0.5)
        yield harness.Server("lab", url, "live.ipynb", log, root)
    finally:
        harness._stop(proc)


def test_explorer_updates_while_fit_runs(lab, page):  # noqa: F811
    deadline = harness.Deadline(harness.TIMEOUT)
    console: list[str] = []
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    step = harness.Steps(page, lab, console)
    ui = harness.UIS["lab"]
    look = lambda: page.evaluate(_LOOK_JS)  # noqa: E731

    with step("open the notebook and run all cells"):
        page.goto(lab.url + ui["path"].format(name=lab.notebook, token=harness.TOKEN))
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=deadline.ms(90))
        harness._wait_for_kernel_idle(lab, deadline.ms(90) / 1000)
        page.wait_for_function(f"() => {ui['idle']}", timeout=deadline.ms(60), polling=250)
        for _attempt in range(4):
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            try:
                page.wait_for_function(harness._STARTED_JS, timeout=deadline.ms(15))
                break
            except Exception:
                continue

    seen = []
    with step("while fit runs, the view shows new epochs and follows the newest"):
        end = time.monotonic() + deadline.ms(180) / 1000
        while True:
            now = look()
            assert not now["done"] or len({s["epoch"] for s in seen if s["running"]}) >= 3, (
                f"the fit ended before the view showed 3 epochs while it ran: {seen}"
            )
            if now["epoch"] is not None and (not seen or seen[-1] != now):
                seen.append(now)
            running = [int(s["epoch"]) for s in seen if s["running"] and s["epoch"] is not None]
            if len(set(running)) >= 3:
                break
            assert time.monotonic() < end, f"no 3 epochs shown while fit ran: {seen}"
            time.sleep(0.05)
        assert running == sorted(running), f"the epochs shown went back: {seen}"
        assert all(s["readout"] == s["epoch"] for s in seen if s["running"]), seen

    with step("moved back by the user, the slider stays while epochs arrive"):
        slider = page.locator(".widget-slider", has_text="epoch")
        slider.locator(".noUi-handle").first.focus()
        page.keyboard.press("Home")
        page.wait_for_function("() => document.querySelector('.fbx').dataset.epoch === '0'")
        assert look()["running"], "the fit ended before the slider was moved"
        page.wait_for_function(
            "() => /\\[\\d+\\]/.test(document.querySelectorAll('.jp-CodeCell')[1]"
            ".querySelector('.jp-InputPrompt').innerText)",
            timeout=deadline.ms(120),
            polling=200,
        )
        after = look()
        assert after["epoch"] == "0" and after["readout"] == "0", after

    with step(
        "after the fit, the slider reaches the last epoch and the training tab draws the loss"
    ):
        handle = slider.locator(".noUi-handle").first
        assert handle.get_attribute("aria-valuemax") == f"{EPOCHS}.0", handle.evaluate(
            "(h) => h.outerHTML"
        )
        for _ in range(EPOCHS + 1):  # one more than there are: it stops at the last
            handle.focus()
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            f"() => document.querySelector('.fbx').dataset.epoch === '{EPOCHS}'", timeout=5000
        )
        assert look()["readout"] == str(EPOCHS)
        page.locator(".fbx-tab[data-panel=training]").click()
        lines = page.locator(".fbx-training polyline[data-metric=loss]")
        lines.first.wait_for(timeout=5000)
        marker = page.locator(".fbx-training .fbx-marker").get_attribute("data-epoch")
        assert marker == str(EPOCHS), marker
    assert not console, console
    out = REPO / "build" / "explorer-live.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".jp-OutputArea-output").filter(has=page.locator(".fbx")).screenshot(path=str(out))


def test_saved_page_switches_node_and_sample_offline(page, tmp_path):  # noqa: F811
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import readme_network

    import fbexplorer as fbx

    keras.utils.set_random_seed(0)
    X = np.random.default_rng(0).uniform(-1, 1, size=(4, 20, 1)).astype("float32")
    ex = fbx.explore(readme_network(), X)
    path = pathlib.Path(ex.save_html(tmp_path / "readme.html"))
    assert path.stat().st_size < 1_000_000

    asked, errors = [], []

    def refuse(route):
        if route.request.url.startswith(("file:", "blob:")):
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", refuse)
    page.goto(path.as_uri())
    view = page.locator(".fbx")
    view.locator(".fbx-graph svg g.node").first.wait_for(timeout=20_000)
    look = """(v) => ({
      title: v.querySelector('.fbx-title').textContent,
      node: v.querySelector('.fbx-readout b').textContent,
      rows: v.querySelectorAll('.fbx-readout tr').length,
      lines: Array.from(v.querySelectorAll('.fbx-lines polyline')).map((p) => p.getAttribute('points')),
      outlined: Array.from(v.querySelectorAll('.fbx-graph g.node')).filter((g) =>
        Array.from(g.querySelectorAll('[stroke]')).some((s) => s.getAttribute('stroke') === '#c2185b'))
        .map((g) => g.querySelector('title').textContent),
    })"""
    start = view.evaluate(look)
    assert start["title"] == "loop, sample 0" and start["outlined"] == [], start
    assert page.locator(".fbx-pick-node option").count() == 7
    assert page.locator(".fbx-pick-sample option").count() == 4
    page.select_option(".fbx-pick-node", "d2")
    d2 = view.evaluate(look)
    assert d2["title"] == "d2, sample 0" and d2["node"] == "d2" and d2["outlined"] == ["d2"]
    assert d2["lines"] != start["lines"] and d2["rows"] == 9  # a header and 8 units
    page.select_option(".fbx-pick-sample", "3")
    d2s3 = view.evaluate(look)
    assert d2s3["title"] == "d2, sample 3" and d2s3["lines"] != d2["lines"]
    page.select_option(".fbx-pick-node", "out")
    out = view.evaluate(look)
    assert out["title"] == "out, sample 3" and out["rows"] == 2
    page.click(".fbx-play")  # and it still plays
    page.wait_for_function("() => +document.querySelector('.fbx').dataset.t >= 4", timeout=10_000)
    assert not asked and not errors, (asked, errors)
    shot = REPO / "build" / "explorer-offline-pickers.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    shutil.copy(path, shot.with_suffix(".html"))


_EXPLORED = """\
import keras
import numpy as np
import fbexplorer as fbx

keras.utils.set_random_seed(0)
x = keras.Input((1,), name="x")
loop = fbx.Feedback((4,), name="loop")
h = keras.layers.Dense(4, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h), feedback={"loop": h})
X = np.random.default_rng(0).uniform(-1, 1, size=(2, 12, 1)).astype("float32")
ex = fbx.explore(net, X)
ex.node.value = "d1"; ex.sample.value = 1    # explored: d1 (samples 0, 1), loop (1, 0)
ex.node.value = "loop"; ex.sample.value = 0
ex"""


def test_exported_notebook_switches_to_the_pages_explored(page, tmp_path):  # noqa: F811
    """`nbconvert --execute --to html` (widget state stored) of a notebook that showed
    the nodes d1 and loop on samples 0 and 1: opened from disk, with no kernel, the
    node and sample Dropdowns switch the view between those pages."""
    deadline = harness.Deadline(harness.TIMEOUT)
    path = harness.exported_notebook(_EXPLORED, tmp_path / "explored.ipynb", deadline)
    explorer, console = harness._open_exported(page, path, deadline)
    title = lambda: explorer.locator(".fbx-title").inner_text()  # noqa: E731
    lines = lambda: explorer.evaluate(  # noqa: E731
        "(r) => Array.from(r.querySelectorAll('.fbx-lines polyline')).map((p) => p.getAttribute('points'))"
    )
    assert title() == "loop, sample 0"
    start = lines()
    node, sample = (
        explorer.locator(".widget-dropdown select").nth(0),
        explorer.locator(".widget-dropdown select").nth(1),
    )
    node.select_option(label="d1")
    explorer.page.wait_for_function(
        "(r) => r.querySelector('.fbx-title').textContent === 'd1, sample 0'",
        arg=explorer.element_handle(),
        timeout=5000,
    )
    assert lines() != start
    sample.select_option(label="sample 1")
    explorer.page.wait_for_function(
        "(r) => r.querySelector('.fbx-title').textContent === 'd1, sample 1'",
        arg=explorer.element_handle(),
        timeout=5000,
    )
    node.select_option(label="out")  # not explored: the view stays on what it has
    assert title() == "d1, sample 1"
    assert not console, console
